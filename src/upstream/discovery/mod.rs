//! Discovery: categories with `discover` take their servers from DNS (a headless Service's
//! A/AAAA records, or SRV). Each name is resolved again when its answer's TTL runs out, at most
//! `dns.interval` apart. A resolver error or timeout keeps the last good set (a metric and a
//! log line, never an empty category); `dns.nxdomain_limit` NXDOMAIN answers in a row empty
//! it. Servers that leave the answer drain like a reload's (their sessions served until
//! `fleet.drain_timeout`); servers that join are health-checked before they take requests.
//! Runs on the control thread; the instance is not ready until each category's first
//! resolution has been made.

mod dns;

pub use dns::{resolve, resolver, Answer, ResolveError};

use super::Registry;
use crate::config::{Discover, DnsConfig, ValidConfig};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// A TTL of 0 (or a clock hiccup) must not turn into a resolution loop.
const MIN_WAIT: Duration = Duration::from_millis(500);

struct Name {
    discover: Discover,
    due: Instant,
    nxdomain: u32,
    /// The last failure logged, so a resolver that stays down is one line, not one a second.
    logged: Option<String>,
    first: bool,
}

fn hold_name(category: &str) -> String {
    format!("the first discovery of category {category}")
}

/// Resolves every discovering category until the runtime ends.
pub async fn run(registry: Arc<Registry>, mut config: watch::Receiver<Arc<ValidConfig>>) {
    let mut names: HashMap<String, Name> = HashMap::new();
    let mut dns: Option<(DnsConfig, hickory_resolver::TokioResolver)> = None;
    loop {
        let current = Arc::clone(&config.borrow_and_update());
        sync(&registry, &current, &mut names);
        if names.is_empty() {
            if config.changed().await.is_err() {
                return;
            }
            continue;
        }
        if dns.as_ref().is_none_or(|(c, _)| *c != current.dns) {
            match resolver(&current.dns) {
                Ok(r) => dns = Some((current.dns.clone(), r)),
                Err(e) => {
                    tracing::error!("discovery cannot start: {e}");
                    dns = None;
                }
            }
        }
        let now = Instant::now();
        if let Some((settings, resolver)) = &dns {
            for (category, name) in names.iter_mut().filter(|(_, n)| n.due <= now) {
                let wait = once(&registry, &current, settings, resolver, category, name).await;
                name.due = Instant::now() + wait.clamp(MIN_WAIT, settings.interval.max(MIN_WAIT));
            }
        }
        let next = names
            .values()
            .map(|n| n.due)
            .min()
            .unwrap_or(now + current.dns.interval);
        tokio::select! {
            _ = tokio::time::sleep_until(next.into()) => {}
            changed = config.changed() => if changed.is_err() { return },
        }
    }
}

/// Follows the config: categories that start discovering (or change their name) are resolved
/// now; those that stop are forgotten (the reload already drained their discovered servers).
fn sync(registry: &Registry, config: &ValidConfig, names: &mut HashMap<String, Name>) {
    let wanted: HashMap<&str, &Discover> = config
        .categories
        .iter()
        .filter_map(|c| c.discover.as_ref().map(|d| (c.name.as_str(), d)))
        .collect();
    names.retain(|category, n| {
        let keep = wanted.get(category.as_str()) == Some(&&n.discover);
        if !keep && n.first {
            registry.release(&hold_name(category));
        }
        keep
    });
    for (category, discover) in wanted {
        names.entry(category.to_string()).or_insert_with(|| {
            registry.hold(hold_name(category));
            Name {
                discover: discover.clone(),
                due: Instant::now(),
                nxdomain: 0,
                logged: None,
                first: true,
            }
        });
    }
}

/// One resolution of one category, applied; returns how long its answer holds.
async fn once(
    registry: &Arc<Registry>,
    config: &ValidConfig,
    settings: &DnsConfig,
    resolver: &hickory_resolver::TokioResolver,
    category: &str,
    name: &mut Name,
) -> Duration {
    let m = crate::metrics::metrics();
    let outcome = tokio::time::timeout(settings.timeout * 2, resolve(resolver, &name.discover))
        .await
        .unwrap_or_else(|_| Err(ResolveError::Failed("timed out".into())));
    let (addrs, wait) = match outcome {
        Ok(answer) => {
            m.discovery.with_label_values(&[category, "ok"]).inc();
            name.nxdomain = 0;
            if name.logged.take().is_some() {
                tracing::info!(
                    category,
                    servers = answer.addrs.len(),
                    "discovery answers again"
                );
            }
            (Some(answer.addrs), answer.valid_for)
        }
        Err(ResolveError::NxDomain) => {
            m.discovery.with_label_values(&[category, "nxdomain"]).inc();
            name.nxdomain += 1;
            let empty = name.nxdomain >= settings.nxdomain_limit;
            tracing::warn!(
                category,
                times = name.nxdomain,
                limit = settings.nxdomain_limit,
                "discovery: the name does not exist{}",
                if empty {
                    "; the category is emptied"
                } else {
                    "; keeping the last good set"
                }
            );
            (empty.then(Vec::new), settings.interval)
        }
        Err(ResolveError::Failed(why)) => {
            m.discovery.with_label_values(&[category, "error"]).inc();
            if name.logged.as_deref() != Some(why.as_str()) {
                tracing::warn!(
                    category,
                    "discovery failed, keeping the last good set: {why}"
                );
                name.logged = Some(why);
            }
            (None, settings.interval)
        }
    };
    if let Some(addrs) = addrs {
        m.discovered
            .with_label_values(&[category])
            .set(addrs.len() as i64);
        let drain = registry.next_drain();
        let leaving = registry.set_discovered(category, &addrs, drain);
        if !leaving.is_empty() {
            tracing::info!(
                category,
                servers = leaving.len(),
                "discovery: servers left the answer; draining"
            );
            let registry = Arc::clone(registry);
            let timeout = config.fleet.drain_timeout;
            tokio::spawn(async move {
                tokio::time::sleep(timeout).await;
                registry.finish_drain(drain);
            });
        }
    }
    if std::mem::take(&mut name.first) {
        registry.release(&hold_name(category));
    }
    wait
}
