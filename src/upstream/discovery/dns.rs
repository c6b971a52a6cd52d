//! The resolver: A/AAAA of a name on a fixed port, or SRV records and their targets' addresses,
//! with the answer's lifetime, and NXDOMAIN told apart from a resolver that did not answer.

use crate::config::{Discover, DnsConfig};
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::{Resolver, TokioResolver};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("the name does not exist (NXDOMAIN)")]
    NxDomain,
    #[error("{0}")]
    Failed(String),
}

/// What one resolution found: every address, sorted, and how long the answer holds.
#[derive(Debug, PartialEq, Eq)]
pub struct Answer {
    pub addrs: Vec<SocketAddr>,
    pub valid_for: Duration,
}

/// Builds the resolver `[dns]` describes (the system's servers when none are named). No cache:
/// each resolution asks again, its TTL only bounds when the next one happens.
pub fn resolver(config: &DnsConfig) -> Result<TokioResolver, String> {
    let mut opts = ResolverOpts::default();
    opts.timeout = config.timeout;
    opts.attempts = 1;
    opts.cache_size = 0;
    let builder = if config.servers.is_empty() {
        let mut b = Resolver::builder(TokioRuntimeProvider::default())
            .map_err(|e| format!("cannot read the system's resolver configuration: {e}"))?;
        *b.options_mut() = opts;
        b
    } else {
        let servers = config
            .servers
            .iter()
            .map(|s| {
                let connections = [ConnectionConfig::udp(), ConnectionConfig::tcp()]
                    .into_iter()
                    .map(|mut c| {
                        c.port = s.port();
                        c
                    })
                    .collect();
                NameServerConfig::new(s.ip(), true, connections)
            })
            .collect();
        Resolver::builder_with_config(
            ResolverConfig::from_parts(None, Vec::new(), servers),
            TokioRuntimeProvider::default(),
        )
        .with_options(opts)
    };
    builder
        .build()
        .map_err(|e| format!("cannot build the resolver: {e}"))
}

fn fqdn(name: &str) -> String {
    if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    }
}

fn classify(e: &hickory_resolver::net::NetError) -> ResolveError {
    if e.is_nx_domain() {
        ResolveError::NxDomain
    } else {
        ResolveError::Failed(e.to_string())
    }
}

/// Resolves what `discover` names.
pub async fn resolve(
    resolver: &TokioResolver,
    discover: &Discover,
) -> Result<Answer, ResolveError> {
    let now = Instant::now();
    let (mut addrs, until) = match discover {
        Discover::Dns { name, port } => {
            let found = resolver.lookup_ip(fqdn(name)).await;
            let found = match found {
                Ok(f) => f,
                // A name with no A/AAAA records (but not NXDOMAIN) is an empty set.
                Err(e) if e.is_no_records_found() && !e.is_nx_domain() => {
                    return Ok(Answer {
                        addrs: Vec::new(),
                        valid_for: Duration::ZERO,
                    })
                }
                Err(e) => return Err(classify(&e)),
            };
            let addrs = found.iter().map(|ip| SocketAddr::new(ip, *port)).collect();
            (addrs, found.valid_until())
        }
        Discover::Srv { name } => {
            let found = resolver
                .srv_lookup(fqdn(name))
                .await
                .map_err(|e| classify(&e))?;
            let mut until = found.valid_until();
            let mut addrs = Vec::new();
            for record in found.answers() {
                let RData::SRV(srv) = &record.data else {
                    continue;
                };
                let target = srv.target.to_string();
                let ips = resolver
                    .lookup_ip(fqdn(&target))
                    .await
                    .map_err(|e| ResolveError::Failed(format!("SRV target {target}: {e}")))?;
                until = until.min(ips.valid_until());
                addrs.extend(ips.iter().map(|ip| SocketAddr::new(ip, srv.port)));
            }
            (addrs, until)
        }
    };
    addrs.sort();
    addrs.dedup();
    Ok(Answer {
        addrs,
        valid_for: until.saturating_duration_since(now),
    })
}
