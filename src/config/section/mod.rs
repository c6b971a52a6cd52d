//! Validation, one file per section of the file, and the checks across sections (listen
//! addresses that clash, port ranges that overlap, a backend listed twice).

mod auth;
pub use auth::loopback_http_url;
mod category;
mod dns;
mod fleet;
mod health;
mod monitor;
mod proxy;
mod session;
mod stdio;

use super::error::ConfigError;
use super::fields::Errors;
use super::model::{CategoryConfig, ValidConfig};
use super::raw::RawConfig;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;

pub(super) fn validate(
    raw: RawConfig,
    source: &Path,
    base: &Path,
    errors: &mut Errors,
) -> ValidConfig {
    let mut proxy = proxy::proxy(&raw.proxy, errors);
    proxy.rate_limit = auth::rate_limit(&raw.proxy.rate_limit, errors);
    proxy.tls = auth::tls(&raw.proxy.tls, base, errors);
    let auth = auth::auth(&raw.auth, base, errors);
    auth::check_exposure(proxy.listen, &auth, errors);
    let health = health::health(&raw.health, errors);
    let (monitor_listen, monitor) = monitor::monitor(&raw.monitor, errors);
    let (admin_listen, admin_token_file) = monitor::admin(&raw.admin, base, errors);
    let listens = [
        ("proxy.listen", proxy.listen),
        ("monitor.listen", monitor_listen),
        ("admin.listen", admin_listen),
    ];
    check_listens(&listens, errors);
    let (fleet, fleet_mcp_path) = fleet::fleet(&raw.fleet, base, errors);
    let session = session::session(&raw.session, &fleet.state_dir, base);
    let dns = dns::dns(&raw.dns, errors);
    let mut categories: Vec<CategoryConfig> = raw
        .categories
        .into_iter()
        .map(|(name, c)| {
            category::category(
                name,
                c,
                &fleet.command,
                &fleet_mcp_path,
                proxy.strategy,
                base,
                errors,
            )
        })
        .collect();
    if categories.is_empty() {
        errors.push(ConfigError::new(
            "categories",
            "(none)",
            "at least one category is needed",
        ));
    }
    categories.sort_by_key(|c| c.ports.as_ref().map_or(u32::MAX, |r| u32::from(*r.start())));
    check_overlaps(&categories, &listens, errors);

    ValidConfig {
        source: source.to_path_buf(),
        proxy,
        monitor_listen,
        monitor,
        admin_listen,
        admin_token_file,
        fleet,
        health,
        session,
        dns,
        auth,
        categories,
    }
}

fn check_listens(listens: &[(&str, SocketAddr)], errors: &mut Errors) {
    for (i, (key_a, a)) in listens.iter().enumerate() {
        for (key_b, b) in &listens[i + 1..] {
            let clash = a.port() == b.port()
                && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified());
            if clash {
                errors.push(ConfigError::new(
                    *key_b,
                    format!("\"{b}\""),
                    format!("same listen address as {key_a} (\"{a}\")"),
                ));
            }
        }
    }
}

fn check_overlaps(
    categories: &[CategoryConfig],
    listens: &[(&str, SocketAddr)],
    errors: &mut Errors,
) {
    for (i, a) in categories.iter().enumerate() {
        let Some(ra) = &a.ports else { continue };
        for b in &categories[i + 1..] {
            let Some(rb) = &b.ports else { continue };
            if ra.start() <= rb.end() && rb.start() <= ra.end() {
                errors.push(ConfigError::new(
                    format!("categories.{}.ports", b.name),
                    format!("\"{}-{}\"", rb.start(), rb.end()),
                    format!(
                        "overlaps categories.{}.ports (\"{}-{}\")",
                        a.name,
                        ra.start(),
                        ra.end()
                    ),
                ));
            }
        }
        for (key, addr) in listens {
            if a.spawned_ports().any(|p| p == addr.port()) {
                errors.push(ConfigError::new(
                    *key,
                    format!("\"{addr}\""),
                    format!("port is used by a server of category {}", a.name),
                ));
            }
        }
    }
    let mut seen = BTreeSet::new();
    for c in categories {
        for b in &c.static_backends {
            if !seen.insert(*b) {
                errors.push(ConfigError::new(
                    format!("categories.{}.backends", c.name),
                    format!("\"{b}\""),
                    "listed twice: a backend belongs to one category",
                ));
            }
        }
    }
}
