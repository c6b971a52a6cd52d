//! The upstream registry: for each category, the set of servers the proxy may send to.
//!
//! Readers (the proxy, once per request) do one `ArcSwap::load` and work on an immutable
//! [`Snapshot`]. Writers (the fleet when a server becomes ready or goes away, the health checker
//! when a verdict flips) change the member list under a mutex, build a whole new snapshot and swap
//! it in. Live per-backend state (in-flight, ejection, latency) and per-category state (strategy
//! cursor, retry budget) are `Arc`s carried from snapshot to snapshot, so nothing is lost in a swap.
//! Passive ejection is the one change that does not need a swap: it is an atomic deadline that
//! strategies check on every pick.

mod backend;
mod budget;
pub mod clock;
mod strategy;

pub use backend::{host_header, Backend, BackendState, InFlight, Origin};
pub use strategy::{hash_bytes, smooth_sequence, PickRequest, Strategy};

use crate::config::{
    EjectionConfig, HealthConfig, ProxyConfig, RetryBudget, StrategyKind, ValidConfig,
};
use arc_swap::ArcSwap;
use budget::BudgetState;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use strategy::StrategyMemory;

/// State of a category that outlives snapshots.
#[derive(Debug, Default)]
pub struct CategoryShared {
    memory: StrategyMemory,
    budget: BudgetState,
    requests: crate::metrics::CategoryRequests,
}

/// The backends of one category as of one snapshot.
#[derive(Debug)]
pub struct UpstreamSet {
    pub name: Arc<str>,
    /// Path of the MCP endpoint on every server of this category.
    pub mcp_path: Arc<str>,
    /// The same as a URI, for requests without a query (most), built once per snapshot.
    pub mcp_uri: http::Uri,
    pub strategy_kind: StrategyKind,
    /// Timeouts, retries and ejection rules in force for this snapshot (a reload swaps them).
    pub proxy: Arc<ProxyConfig>,
    /// Header consistent hashing keys on (lower case).
    pub hash_header: Option<http::HeaderName>,
    /// All members, eligible or not, in configuration order (for stats and session lookups).
    pub all: Vec<Backend>,
    /// Members the strategy may pick from (ready and healthy).
    ready: Vec<Backend>,
    by_addr: HashMap<SocketAddr, usize>,
    strategy: Box<dyn Strategy>,
    shared: Arc<CategoryShared>,
}

impl UpstreamSet {
    /// The backend for a request without a session: the strategy's pick among eligible,
    /// non-ejected servers, avoiding `req.avoid` unless it is the only one left.
    pub fn pick(&self, req: &PickRequest) -> Option<&Backend> {
        let i = self.strategy.pick(&self.ready, req).or_else(|| {
            req.avoid.and_then(|_| {
                self.strategy.pick(
                    &self.ready,
                    &PickRequest {
                        avoid: None,
                        ..*req
                    },
                )
            })
        })?;
        Some(&self.ready[i])
    }

    /// The backend that owns a session, if it is still eligible and not ejected.
    pub fn session_target(&self, addr: &SocketAddr, now_ms: u64) -> Option<&Backend> {
        self.by_addr
            .get(addr)
            .map(|&i| &self.all[i])
            .filter(|b| b.serves_sessions() && b.state.usable(now_ms))
    }

    /// Requests in flight on the member at `addr`.
    pub fn in_flight(&self, addr: &SocketAddr) -> Option<u32> {
        self.by_addr
            .get(addr)
            .map(|&i| self.all[i].state.in_flight())
    }

    pub fn ready_count(&self) -> usize {
        self.ready.len()
    }

    /// Passive ejection of `backend`, unless that would take more than `max_percent` of the
    /// eligible servers out by ejection alone. Returns the ejection's length when it happened.
    pub fn try_eject(
        &self,
        backend: &Backend,
        now_ms: u64,
        config: &EjectionConfig,
    ) -> Option<Duration> {
        if !backend.state.usable(now_ms) {
            return None; // already out
        }
        let ejected = self
            .ready
            .iter()
            .filter(|b| !b.state.usable(now_ms))
            .count();
        if (ejected + 1) * 100 > config.max_percent as usize * self.ready.len() {
            return None;
        }
        Some(backend.state.eject(now_ms, config))
    }

    pub fn record_request(&self, now_ms: u64) {
        self.shared.budget.record_request(now_ms);
    }

    /// Counts an answered request in the category's metrics.
    pub fn record_answer(&self, status: u16, method: &'static str, seconds: f64) {
        self.shared
            .requests
            .record(&self.name, status, method, seconds);
    }

    pub fn try_retry(&self, now_ms: u64, budget: &RetryBudget) -> bool {
        self.shared.budget.try_retry(now_ms, budget)
    }
}

/// Everything the proxy needs to route, frozen at one instant.
#[derive(Debug)]
pub struct Snapshot {
    /// In config order.
    pub sets: Vec<Arc<UpstreamSet>>,
    index: HashMap<Arc<str>, usize>,
    /// `"a, b, c"`: named in the 404 for an unknown category, built once here, not per request.
    pub known: String,
    /// Proxy settings in force (limits that apply before a category is known).
    pub proxy: Arc<ProxyConfig>,
}

impl Snapshot {
    pub fn category(&self, name: &str) -> Option<&Arc<UpstreamSet>> {
        self.index.get(name).map(|&i| &self.sets[i])
    }

    /// Servers the proxy can send new requests to right now, per category.
    pub fn serving(set: &UpstreamSet, now_ms: u64) -> usize {
        set.ready.iter().filter(|b| b.state.usable(now_ms)).count()
    }

    pub fn stats(&self) -> FleetStats {
        let now = clock::now_ms();
        let categories = self
            .sets
            .iter()
            .map(|set| {
                let servers: Vec<ServerStats> = set
                    .all
                    .iter()
                    .map(|b| ServerStats {
                        id: b.id.to_string(),
                        addr: b.addr.to_string(),
                        origin: b.origin,
                        weight: b.weight,
                        ready: b.ready,
                        healthy: b.healthy,
                        draining: b.draining,
                        ejected_ms: b.state.ejected_until().saturating_sub(now),
                        in_flight: b.state.in_flight(),
                        requests: b.state.requests(),
                        failures: b.state.failures(),
                        connect_failures: b.state.connect_failures(),
                        ejections: b.state.ejections_total(),
                        latency_ms: b.state.latency_us().map(|us| (us / 10.0).round() / 100.0),
                    })
                    .collect();
                CategoryStats {
                    name: set.name.to_string(),
                    strategy: set.strategy_kind.name(),
                    ready: Self::serving(set, now),
                    total: set.all.len(),
                    requests: servers.iter().map(|s| s.requests).sum(),
                    servers,
                }
            })
            .collect::<Vec<_>>();
        FleetStats {
            ready: categories.iter().map(|c| c.ready).sum(),
            total: categories.iter().map(|c| c.total).sum(),
            categories,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct FleetStats {
    pub ready: usize,
    pub total: usize,
    pub categories: Vec<CategoryStats>,
}

#[derive(Debug, Serialize)]
pub struct CategoryStats {
    pub name: String,
    pub strategy: &'static str,
    /// Servers taking new requests: ready, healthy and not ejected.
    pub ready: usize,
    pub total: usize,
    pub requests: u64,
    pub servers: Vec<ServerStats>,
}

#[derive(Debug, Serialize)]
pub struct ServerStats {
    pub id: String,
    pub addr: String,
    pub origin: Origin,
    pub weight: u32,
    pub ready: bool,
    pub healthy: bool,
    pub draining: bool,
    /// Milliseconds of passive ejection left (0: not ejected).
    pub ejected_ms: u64,
    pub in_flight: u32,
    pub requests: u64,
    pub failures: u64,
    pub connect_failures: u64,
    pub ejections: u64,
    /// Peak-EWMA time to first byte.
    pub latency_ms: Option<f64>,
}

/// A member as the writers see it: the backend plus how many times it has become ready, so the
/// health checker can tell a restarted server from one it has already judged.
#[derive(Debug, Clone)]
struct Member {
    backend: Backend,
    ready_epoch: u64,
    /// Still in the configuration (a draining member that is not goes away when its drain ends).
    desired: bool,
}

#[derive(Debug)]
struct CategoryMembers {
    name: Arc<str>,
    mcp_path: Arc<str>,
    strategy: StrategyKind,
    hash_header: Option<http::HeaderName>,
    proxy: Arc<ProxyConfig>,
    shared: Arc<CategoryShared>,
    members: Vec<Member>,
    /// Still in the configuration.
    desired: bool,
}

/// The writers' side: the member lists the snapshots are built from.
#[derive(Debug)]
struct Members {
    categories: Vec<CategoryMembers>,
    health: HealthConfig,
    proxy: Arc<ProxyConfig>,
}

/// The members a config describes, all fresh (not ready, never checked).
fn desired_members(config: &ValidConfig) -> Vec<CategoryMembers> {
    let healthy = !config.health.enabled;
    let proxy = Arc::new(config.proxy.clone());
    config
        .categories
        .iter()
        .map(|c| {
            let weight_of = |key: &str| c.server_weights.get(key).copied().unwrap_or(c.weight);
            let spawned: Vec<Member> = if config.fleet.enabled {
                c.spawned_ports()
                    .enumerate()
                    .map(|(i, port)| {
                        let id = server_id(&c.name, i);
                        let addr = SocketAddr::new(config.fleet.host, port);
                        Member {
                            backend: Backend {
                                weight: weight_of(&id),
                                id: id.into(),
                                host: host_header(addr),
                                addr,
                                origin: Origin::Spawned,
                                ready: false,
                                healthy,
                                draining: false,
                                state: Arc::default(),
                            },
                            ready_epoch: 0,
                            desired: true,
                        }
                    })
                    .collect()
            } else {
                Vec::new()
            };
            let statics = c.static_backends.iter().map(|addr| Member {
                backend: Backend {
                    id: format!("{}@{addr}", c.name).into(),
                    host: host_header(*addr),
                    addr: *addr,
                    origin: Origin::Static,
                    weight: weight_of(&addr.to_string()),
                    ready: true,
                    healthy,
                    draining: false,
                    state: Arc::default(),
                },
                ready_epoch: 1,
                desired: true,
            });
            CategoryMembers {
                name: c.name.as_str().into(),
                mcp_path: c.mcp_path.as_str().into(),
                strategy: c.strategy,
                hash_header: c
                    .hash_header
                    .as_deref()
                    .and_then(|h| http::HeaderName::from_bytes(h.as_bytes()).ok()),
                proxy: Arc::clone(&proxy),
                shared: Arc::default(),
                members: spawned.into_iter().chain(statics).collect(),
                desired: true,
            }
        })
        .collect()
}

impl Members {
    fn snapshot(&self) -> Snapshot {
        let sets: Vec<Arc<UpstreamSet>> = self
            .categories
            .iter()
            .map(|c| {
                let all: Vec<Backend> = c.members.iter().map(|m| m.backend.clone()).collect();
                let ready: Vec<Backend> = all.iter().filter(|b| b.eligible()).cloned().collect();
                Arc::new(UpstreamSet {
                    name: Arc::clone(&c.name),
                    mcp_path: Arc::clone(&c.mcp_path),
                    mcp_uri: c
                        .mcp_path
                        .parse()
                        .unwrap_or_else(|_| http::Uri::from_static("/mcp")),
                    strategy_kind: c.strategy,
                    proxy: Arc::clone(&c.proxy),
                    hash_header: c.hash_header.clone(),
                    by_addr: all.iter().enumerate().map(|(i, b)| (b.addr, i)).collect(),
                    strategy: strategy::build(c.strategy, &ready, &c.shared.memory),
                    ready,
                    all,
                    shared: Arc::clone(&c.shared),
                })
            })
            .collect();
        Snapshot {
            index: sets
                .iter()
                .enumerate()
                .map(|(i, s)| (Arc::clone(&s.name), i))
                .collect(),
            known: sets
                .iter()
                .map(|s| s.name.as_ref())
                .collect::<Vec<_>>()
                .join(", "),
            sets,
            proxy: Arc::clone(&self.proxy),
        }
    }
}

/// The id a spawned server gets: category and index within it, e.g. `database-7`.
pub fn server_id(category: &str, index: usize) -> String {
    format!("{category}-{index}")
}

/// What the health checker needs to know of a member.
#[derive(Debug, Clone)]
pub struct HealthTarget {
    pub id: Arc<str>,
    pub addr: SocketAddr,
    pub mcp_path: Arc<str>,
    pub healthy: bool,
    pub ready_epoch: u64,
}

/// Shared by the proxy (reads) and the plugins (writes).
#[derive(Debug)]
pub struct Registry {
    current: ArcSwap<Snapshot>,
    members: Mutex<Members>,
    /// With active checks on, a server is unhealthy until it passes one.
    health_checks: Mutex<bool>,
    /// Bumped on every swap, so the health checker notices new members without polling.
    generation: tokio::sync::watch::Sender<u64>,
    /// Facts about the instance shown in `/health` (e.g. the memory enforcement layer).
    labels: Mutex<Vec<(&'static str, &'static str)>>,
}

impl Registry {
    /// Registers every category of the config: spawned servers start not ready (the fleet
    /// publishes them once they accept connections), static backends start ready; with active
    /// health checks on, every server starts unhealthy until it passes once.
    pub fn new(config: &ValidConfig) -> Self {
        let members = Members {
            categories: desired_members(config),
            health: config.health.clone(),
            proxy: Arc::new(config.proxy.clone()),
        };
        Self {
            current: ArcSwap::from_pointee(members.snapshot()),
            members: Mutex::new(members),
            health_checks: Mutex::new(config.health.enabled),
            generation: tokio::sync::watch::Sender::new(0),
            labels: Mutex::new(Vec::new()),
        }
    }

    pub fn set_label(&self, key: &'static str, value: &'static str) {
        let mut labels = self
            .labels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        labels.retain(|(k, _)| *k != key);
        labels.push((key, value));
    }

    pub fn labels(&self) -> Vec<(&'static str, &'static str)> {
        self.labels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Applies a reloaded config: categories and members are rebuilt from it, keeping the live
    /// state (counters, ejection, health, readiness) of every member whose address stays, and
    /// the strategy cursor and retry budget of every category that stays. Members that leave the
    /// config, and those in `replace` (their command changed), are kept but draining: no new
    /// requests, their sessions still served until `finish_drain`. Returns the draining
    /// addresses and how long building and swapping the snapshot took.
    pub fn apply(
        &self,
        config: &ValidConfig,
        replace: &HashSet<SocketAddr>,
    ) -> (Vec<SocketAddr>, Duration, Duration) {
        let mut members = self.lock();
        let mut fresh = desired_members(config);
        let mut old: HashMap<Arc<str>, CategoryMembers> = members
            .categories
            .drain(..)
            .map(|c| (Arc::clone(&c.name), c))
            .collect();
        let mut draining = Vec::new();
        for c in &mut fresh {
            let Some(mut prev) = old.remove(&c.name) else {
                continue;
            };
            c.shared = Arc::clone(&prev.shared);
            for m in &mut c.members {
                if let Some(i) = prev
                    .members
                    .iter()
                    .position(|p| p.backend.addr == m.backend.addr)
                {
                    let p = prev.members.remove(i);
                    m.backend.ready = p.backend.ready;
                    m.backend.healthy = p.backend.healthy;
                    m.backend.state = p.backend.state;
                    m.ready_epoch = p.ready_epoch;
                    m.backend.draining = p.backend.draining || replace.contains(&m.backend.addr);
                    if m.backend.draining {
                        draining.push(m.backend.addr);
                    }
                }
            }
            // Members that left the config drain at the end of the list.
            for mut p in prev.members {
                p.desired = false;
                if !p.backend.draining {
                    p.backend.draining = true;
                }
                draining.push(p.backend.addr);
                c.members.push(p);
            }
        }
        // Whole categories that left keep serving their sessions while they drain; they take no
        // new requests (every member is draining).
        for (_, mut gone) in old {
            gone.desired = false;
            for m in &mut gone.members {
                m.desired = false;
                m.backend.draining = true;
                draining.push(m.backend.addr);
            }
            fresh.push(gone);
        }
        if !config.health.enabled {
            for c in &mut fresh {
                for m in &mut c.members {
                    m.backend.healthy = true;
                }
            }
        }
        members.categories = fresh;
        members.health = config.health.clone();
        members.proxy = Arc::new(config.proxy.clone());
        *self
            .health_checks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = config.health.enabled;
        let started = std::time::Instant::now();
        let snapshot = Arc::new(members.snapshot());
        let built = started.elapsed();
        let swap = std::time::Instant::now();
        self.current.store(snapshot);
        let swapped = swap.elapsed();
        self.generation.send_modify(|g| *g += 1);
        draining.sort();
        draining.dedup();
        (draining, built, swapped)
    }

    /// Ends the drain of `addrs`: members no longer in the config are removed (their sessions
    /// now get 404), members being replaced start over as not ready.
    pub fn finish_drain(&self, addrs: &[SocketAddr]) {
        let mut members = self.lock();
        let set: HashSet<&SocketAddr> = addrs.iter().collect();
        for c in &mut members.categories {
            c.members
                .retain(|m| !(m.backend.draining && !m.desired && set.contains(&m.backend.addr)));
            for m in &mut c.members {
                if m.backend.draining && set.contains(&m.backend.addr) {
                    m.backend.draining = false;
                    m.backend.ready = false;
                }
            }
        }
        members
            .categories
            .retain(|c| c.desired || !c.members.is_empty());
        self.publish(&members);
    }

    /// The health settings in force.
    pub fn health_config(&self) -> HealthConfig {
        self.lock().health.clone()
    }

    /// Requests in flight on the member at `addr` (0 when unknown).
    pub fn in_flight(&self, addr: SocketAddr) -> u32 {
        self.load()
            .sets
            .iter()
            .find_map(|s| s.in_flight(&addr))
            .unwrap_or(0)
    }

    /// The current snapshot, for the hot path: one atomic load, no lock.
    pub fn load(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// A receiver that changes whenever a new snapshot is published.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.generation.subscribe()
    }

    fn publish(&self, members: &Members) {
        self.current.store(Arc::new(members.snapshot()));
        self.generation.send_modify(|g| *g += 1);
    }

    /// Applies `change` to every member named in `changes` (by address) and publishes one new
    /// snapshot for the lot. Returns how many members changed.
    fn update(
        &self,
        changes: &[(SocketAddr, bool)],
        mut change: impl FnMut(&mut Member, bool) -> bool,
    ) -> usize {
        let mut members = self.lock();
        let wanted: HashMap<SocketAddr, bool> = changes.iter().copied().collect();
        let mut changed = 0;
        for c in &mut members.categories {
            for m in &mut c.members {
                if let Some(&value) = wanted.get(&m.backend.addr) {
                    if change(m, value) {
                        changed += 1;
                    }
                }
            }
        }
        if changed > 0 {
            self.publish(&members);
        }
        changed
    }

    /// Marks servers ready (accepting connections) or not. A server that becomes ready again
    /// after a restart is unhealthy until the health checker has passed it once.
    pub fn set_ready(&self, changes: &[(SocketAddr, bool)]) -> usize {
        let checks = *self
            .health_checks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.update(changes, |m, ready| {
            if m.backend.ready == ready {
                return false;
            }
            m.backend.ready = ready;
            if ready {
                m.ready_epoch += 1;
                m.backend.healthy = !checks;
            }
            true
        })
    }

    /// Records active health verdicts.
    pub fn set_health(&self, changes: &[(SocketAddr, bool)]) -> usize {
        self.update(changes, |m, healthy| {
            if m.backend.healthy == healthy {
                return false;
            }
            m.backend.healthy = healthy;
            true
        })
    }

    /// Every ready member, for the health checker.
    pub fn health_targets(&self) -> Vec<HealthTarget> {
        let members = self.lock();
        members
            .categories
            .iter()
            .flat_map(|c| {
                c.members
                    .iter()
                    .filter(|m| m.backend.ready)
                    .map(|m| HealthTarget {
                        id: Arc::clone(&m.backend.id),
                        addr: m.backend.addr,
                        mcp_path: Arc::clone(&c.mcp_path),
                        healthy: m.backend.healthy,
                        ready_epoch: m.ready_epoch,
                    })
            })
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, Members> {
        // A writer that panicked left the member list as consistent as before its change (every
        // change is a single assignment), so the poison flag carries no information here.
        self.members
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn registry(extra: &str) -> Registry {
        let config = crate::config::parse(
            &format!(
                r#"
{extra}
[categories.a]
ports = "41000-41002"
[categories.b]
backends = ["127.0.0.1:7000", "127.0.0.1:7001"]
"#
            ),
            Path::new("t.toml"),
            Path::new("."),
        )
        .expect("valid");
        Registry::new(&config)
    }

    fn req() -> PickRequest {
        PickRequest {
            key: None,
            avoid: None,
            now_ms: clock::now_ms(),
        }
    }

    #[test]
    fn spawned_start_unready_static_start_unhealthy_until_checked() {
        let r = registry("");
        let snap = r.load();
        assert_eq!(snap.known, "a, b");
        let a = snap.category("a").expect("a");
        assert_eq!(a.all.len(), 3);
        assert!(a.pick(&req()).is_none());
        let b = snap.category("b").expect("b");
        assert_eq!(
            b.ready_count(),
            0,
            "static servers wait for their first check"
        );
        assert_eq!(r.health_targets().len(), 2);
        let addr: SocketAddr = "127.0.0.1:7000".parse().expect("addr");
        assert_eq!(r.set_health(&[(addr, true)]), 1);
        assert_eq!(r.load().category("b").expect("b").ready_count(), 1);
        assert!(snap.category("c").is_none());
    }

    #[test]
    fn without_health_checks_ready_means_eligible() {
        let r = registry("[health]\nenabled = false");
        assert_eq!(r.load().category("b").expect("b").ready_count(), 2);
    }

    #[test]
    fn publishing_swaps_a_snapshot_and_keeps_live_state() {
        let r = registry("");
        let mut generation = r.subscribe();
        let addr: SocketAddr = "127.0.0.1:41001".parse().expect("addr");
        let before = r.load().category("a").expect("a").all[1].state.clone();
        let guard = before.start_request();
        assert_eq!(r.set_ready(&[(addr, true)]), 1);
        assert!(generation.has_changed().expect("sender alive"));
        generation.mark_unchanged();
        assert_eq!(r.set_ready(&[(addr, true)]), 0, "no change, no swap");
        assert!(!generation.has_changed().expect("sender alive"));
        assert!(
            r.load().category("a").expect("a").pick(&req()).is_none(),
            "not yet checked"
        );
        let target = r
            .health_targets()
            .into_iter()
            .find(|t| t.addr == addr)
            .expect("target");
        assert_eq!(target.ready_epoch, 1);
        r.set_health(&[(addr, true)]);
        let snap = r.load();
        let a = snap.category("a").expect("a");
        let picked = a.pick(&req()).expect("one eligible");
        assert_eq!(picked.addr, addr);
        assert_eq!(picked.state.in_flight(), 1, "counters carried over");
        drop(guard);
        assert_eq!(picked.state.in_flight(), 0);
        assert!(a.session_target(&addr, clock::now_ms()).is_some());
        let other: SocketAddr = "127.0.0.1:41000".parse().expect("addr");
        assert!(a.session_target(&other, clock::now_ms()).is_none());

        // A restart makes it unhealthy again until it passes a check.
        r.set_ready(&[(addr, false)]);
        r.set_ready(&[(addr, true)]);
        assert_eq!(r.load().category("a").expect("a").ready_count(), 0);
    }

    #[test]
    fn ejection_respects_the_share_cap() {
        let r = registry("[health]\nenabled = false");
        let snap = r.load();
        let b = snap.category("b").expect("b");
        let config = EjectionConfig {
            after_5xx: 5,
            base_time: Duration::from_secs(10),
            max_time: Duration::from_secs(60),
            max_percent: 50,
        };
        let now = clock::now_ms();
        assert!(b.try_eject(&b.all[0], now, &config).is_some());
        assert!(
            b.try_eject(&b.all[1], now, &config).is_none(),
            "a second ejection would take 100% out"
        );
        let p = b.pick(&req()).expect("the other one");
        assert_eq!(p.addr, b.all[1].addr);
        assert!(
            b.session_target(&b.all[0].addr, now).is_none(),
            "ejected: sessions get 404"
        );
    }
}
