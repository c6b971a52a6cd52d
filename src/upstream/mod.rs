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
pub mod discovery;
mod membership;
mod strategy;
mod views;

pub use backend::{host_header, Backend, BackendState, InFlight, Origin};
pub use strategy::{hash_bytes, smooth_sequence, PickRequest, Strategy};
pub use views::{CategoryStats, FleetStats, ServerStats};

use crate::config::{
    EjectionConfig, HealthConfig, ProxyConfig, RetryBudget, StrategyKind, ValidConfig,
};
use crate::fast_hash::FastHash;
use arc_swap::ArcSwap;
use budget::BudgetState;
use std::collections::HashMap;
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
    /// Who may call the category, what they may use, and the proxy's own upstream fields.
    pub access: Arc<CategoryAccess>,
    /// All members, eligible or not, in configuration order (for stats and session lookups).
    pub all: Vec<Backend>,
    /// Members the configuration describes (`all` less those leaving): what "below plan" is
    /// measured against.
    pub planned: usize,
    /// Still in the configuration (a removed category drains before it goes).
    pub configured: bool,
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
    /// Looked up with the category a request names, on every request.
    index: HashMap<Arc<str>, usize, FastHash>,
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
}

/// A member as the writers see it: the backend plus how many times it has become ready, so the
/// health checker can tell a restarted server from one it has already judged.
#[derive(Debug, Clone)]
struct Member {
    backend: Backend,
    ready_epoch: u64,
    /// Still in the configuration (a draining member that is not goes away when its drain ends).
    desired: bool,
    /// The drain this member is in (`backend.draining`), by the number of the reload that began
    /// it: only that reload's timer ends it, so a member a later reload takes back, or drains
    /// again, is not stopped by an earlier reload's timer.
    drain: Option<u64>,
}

/// A server the fleet's plan spawns: the one source of spawned membership. The registry
/// publishes what it is given; it never derives spawned servers from the config itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpawnedMember {
    pub id: Arc<str>,
    pub category: Arc<str>,
    pub addr: SocketAddr,
}

/// Members whose drain ended (`Registry::finish_drain`).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Drained {
    /// Left the configuration: removed from the registry now.
    pub removed: Vec<Arc<str>>,
    /// Still configured (their command changed): back as not ready, to be started again.
    pub replaced: Vec<Arc<str>>,
}

/// `categories.NAME.auth` and `upstream_headers`, shared by the snapshots of a config.
#[derive(Debug, Default, PartialEq)]
pub struct CategoryAccess {
    pub auth: crate::config::CategoryAuth,
    pub upstream_headers: Vec<crate::config::UpstreamHeader>,
}

#[derive(Debug)]
struct CategoryMembers {
    name: Arc<str>,
    mcp_path: Arc<str>,
    /// Its spawned servers are stdio servers the fleet bridges: their checker asks the bridge's
    /// health path, which never starts a child (`fleet::BRIDGE_HEALTH_PATH`).
    bridged: bool,
    strategy: StrategyKind,
    hash_header: Option<http::HeaderName>,
    access: Arc<CategoryAccess>,
    proxy: Arc<ProxyConfig>,
    shared: Arc<CategoryShared>,
    members: Vec<Member>,
    /// Still in the configuration.
    desired: bool,
    /// `weight` of the category: what a discovered member gets (`server_weights` names
    /// spawned ids and static addresses, not addresses DNS may hand out).
    weight: u32,
}

/// The writers' side: the member lists the snapshots are built from.
#[derive(Debug)]
struct Members {
    categories: Vec<CategoryMembers>,
    health: HealthConfig,
    proxy: Arc<ProxyConfig>,
}

impl CategoryMembers {
    fn set(&self) -> Arc<UpstreamSet> {
        let all: Vec<Backend> = self.members.iter().map(|m| m.backend.clone()).collect();
        let ready: Vec<Backend> = all.iter().filter(|b| b.eligible()).cloned().collect();
        Arc::new(UpstreamSet {
            name: Arc::clone(&self.name),
            mcp_path: Arc::clone(&self.mcp_path),
            mcp_uri: self
                .mcp_path
                .parse()
                .unwrap_or_else(|_| http::Uri::from_static("/mcp")),
            strategy_kind: self.strategy,
            proxy: Arc::clone(&self.proxy),
            hash_header: self.hash_header.clone(),
            access: Arc::clone(&self.access),
            by_addr: all.iter().enumerate().map(|(i, b)| (b.addr, i)).collect(),
            strategy: strategy::build(self.strategy, &ready, &self.shared.memory),
            ready,
            planned: self.members.iter().filter(|m| m.desired).count(),
            configured: self.desired,
            all,
            shared: Arc::clone(&self.shared),
        })
    }
}

impl Members {
    fn snapshot(&self) -> Snapshot {
        self.snapshot_from(None)
    }

    /// As `snapshot`, keeping `previous`'s set of every category `changed` does not name (by
    /// position, the category list being the same): a server's readiness or health changes
    /// one category, and rebuilding all of them for it made a fleet's start-up quadratic.
    fn snapshot_from(&self, reuse: Option<(&Snapshot, &[bool])>) -> Snapshot {
        let sets: Vec<Arc<UpstreamSet>> = self
            .categories
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let kept = reuse.and_then(|(previous, changed)| {
                    let set = previous.sets.get(i)?;
                    (!changed.get(i).copied().unwrap_or(true) && set.name == c.name)
                        .then(|| Arc::clone(set))
                });
                kept.unwrap_or_else(|| c.set())
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
    pub category: Arc<str>,
    pub addr: SocketAddr,
    pub mcp_path: Arc<str>,
    /// A bridged stdio server (see `CategoryMembers::bridged`).
    pub bridged: bool,
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
    /// SIGTERM arrived: the instance is finishing what it has and takes nothing new.
    stopping: std::sync::atomic::AtomicBool,
    /// What the instance still waits for before it is ready (the fleet's start, a category's
    /// first discovery), by name.
    pending: Mutex<std::collections::BTreeSet<String>>,
    /// Numbers drains (see `next_drain`).
    drains: std::sync::atomic::AtomicU64,
}

impl Registry {
    /// Registers every category of the config: spawned servers start not ready (the fleet
    /// publishes them once they accept connections), static backends start ready; with active
    /// health checks on, every server starts unhealthy until it passes once.
    pub fn new(config: &ValidConfig, spawned: &[SpawnedMember]) -> Self {
        let members = Members {
            categories: membership::desired_members(config, spawned),
            health: config.health.clone(),
            proxy: Arc::new(config.proxy.clone()),
        };
        Self {
            current: ArcSwap::from_pointee(members.snapshot()),
            members: Mutex::new(members),
            health_checks: Mutex::new(config.health.enabled),
            generation: tokio::sync::watch::Sender::new(0),
            labels: Mutex::new(Vec::new()),
            stopping: std::sync::atomic::AtomicBool::new(false),
            pending: Mutex::new(std::collections::BTreeSet::new()),
            drains: std::sync::atomic::AtomicU64::new(0),
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

    /// From now on the instance is not ready (`/readyz` 503): it is stopping.
    pub fn set_stopping(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::Release);
    }

    pub fn stopping(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The instance is not ready until `release(what)`.
    pub fn hold(&self, what: impl Into<String>) {
        self.pending_lock().insert(what.into());
    }

    pub fn release(&self, what: &str) {
        self.pending_lock().remove(what);
    }

    /// `/readyz`: whether this instance should be sent traffic, and what it waits for. A
    /// category without a serving server does not make it unready: every replica sees the
    /// same servers, and taking them all out would turn a partial outage into a whole one.
    pub fn readiness(&self) -> crate::api::Readiness {
        let waiting_for: Vec<String> = self.pending_lock().iter().cloned().collect();
        let stopping = self.stopping();
        crate::api::Readiness {
            ready: !stopping && waiting_for.is_empty(),
            stopping,
            waiting_for,
        }
    }

    fn pending_lock(&self) -> MutexGuard<'_, std::collections::BTreeSet<String>> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn labels(&self) -> Vec<(&'static str, &'static str)> {
        self.labels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The health settings in force.
    pub fn health_config(&self) -> HealthConfig {
        self.lock().health.clone()
    }

    /// The live state (in-flight count, ejection, counters) of the member at `addr`: the same
    /// `Arc` every snapshot carries, so it can be watched without loading snapshots.
    pub fn live_state(&self, addr: SocketAddr) -> Option<Arc<BackendState>> {
        self.load()
            .sets
            .iter()
            .find_map(|s| s.by_addr.get(&addr).map(|&i| Arc::clone(&s.all[i].state)))
    }

    /// The current snapshot, for the hot path: one atomic load, no lock.
    pub fn load(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// A receiver that changes whenever a new snapshot is published.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Publishes a snapshot of `members`; with `touched`, only those categories' sets are
    /// rebuilt (see `Members::snapshot_from`).
    fn publish(&self, members: &Members, touched: Option<&[bool]>) {
        let next = match touched {
            Some(touched) => members.snapshot_from(Some((&self.current.load_full(), touched))),
            None => members.snapshot(),
        };
        self.current.store(Arc::new(next));
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
        let mut touched = vec![false; members.categories.len()];
        for (c, touched) in members.categories.iter_mut().zip(&mut touched) {
            for m in &mut c.members {
                if let Some(&value) = wanted.get(&m.backend.addr) {
                    if change(m, value) {
                        changed += 1;
                        *touched = true;
                    }
                }
            }
        }
        if changed > 0 {
            self.publish(&members, Some(&touched));
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
                        category: Arc::clone(&c.name),
                        addr: m.backend.addr,
                        mcp_path: Arc::clone(&c.mcp_path),
                        bridged: c.bridged && m.backend.origin == backend::Origin::Spawned,
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
mod tests;
