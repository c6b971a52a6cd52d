//! The upstream registry: for each category, the set of servers the proxy may send to.
//!
//! Readers (the proxy, once per request) do one `ArcSwap::load` and work on an immutable
//! [`Snapshot`]. Writers (the fleet when a server becomes ready or goes away; later reload and
//! health) change the member list under a mutex, build a whole new snapshot and swap it in. Live
//! per-backend counters are `Arc`s carried from member to snapshot, so nothing is lost in a swap.

mod backend;
mod strategy;

pub use backend::{Backend, BackendState, InFlight, Origin};
pub use strategy::{RoundRobin, Strategy};

use crate::config::{StrategyKind, ValidConfig};
use arc_swap::ArcSwap;
use serde::Serialize;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use strategy::StrategyMemory;

/// The backends of one category as of one snapshot.
#[derive(Debug)]
pub struct UpstreamSet {
    pub name: Arc<str>,
    /// Path of the MCP endpoint on every server of this category.
    pub mcp_path: Arc<str>,
    /// All members, ready or not, in configuration order (for stats and session lookups).
    pub all: Vec<Backend>,
    /// Members the strategy may pick from.
    ready: Vec<Backend>,
    by_addr: HashMap<SocketAddr, usize>,
    strategy: Box<dyn Strategy>,
}

impl UpstreamSet {
    /// The backend for a request without a session.
    pub fn pick(&self) -> Option<&Backend> {
        self.strategy.pick(&self.ready).map(|i| &self.ready[i])
    }

    /// The backend that owns a session, if it is still a ready member of this category.
    pub fn ready_by_addr(&self, addr: &SocketAddr) -> Option<&Backend> {
        self.by_addr
            .get(addr)
            .map(|&i| &self.all[i])
            .filter(|b| b.ready)
    }

    pub fn ready_count(&self) -> usize {
        self.ready.len()
    }
}

/// Everything the proxy needs to route, frozen at one instant.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// In config order.
    pub sets: Vec<Arc<UpstreamSet>>,
    index: HashMap<Arc<str>, usize>,
    /// `"a, b, c"`: named in the 404 for an unknown category, built once here, not per request.
    pub known: String,
}

impl Snapshot {
    pub fn category(&self, name: &str) -> Option<&Arc<UpstreamSet>> {
        self.index.get(name).map(|&i| &self.sets[i])
    }

    pub fn stats(&self) -> FleetStats {
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
                        ready: b.ready,
                        in_flight: b.state.in_flight(),
                        requests: b.state.requests(),
                        connect_failures: b.state.connect_failures(),
                    })
                    .collect();
                CategoryStats {
                    name: set.name.to_string(),
                    ready: set.ready.len(),
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
    pub ready: bool,
    pub in_flight: u32,
    pub requests: u64,
    pub connect_failures: u64,
}

#[derive(Debug)]
struct CategoryMembers {
    name: Arc<str>,
    mcp_path: Arc<str>,
    strategy: StrategyKind,
    memory: StrategyMemory,
    members: Vec<Backend>,
}

/// The writers' side: the member lists the snapshots are built from.
#[derive(Debug)]
struct Members {
    categories: Vec<CategoryMembers>,
}

impl Members {
    fn snapshot(&self) -> Snapshot {
        let sets: Vec<Arc<UpstreamSet>> = self
            .categories
            .iter()
            .map(|c| {
                Arc::new(UpstreamSet {
                    name: Arc::clone(&c.name),
                    mcp_path: Arc::clone(&c.mcp_path),
                    by_addr: c
                        .members
                        .iter()
                        .enumerate()
                        .map(|(i, b)| (b.addr, i))
                        .collect(),
                    ready: c.members.iter().filter(|b| b.ready).cloned().collect(),
                    all: c.members.clone(),
                    strategy: strategy::build(c.strategy, &c.memory),
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
        }
    }
}

/// The id a spawned server gets: category and index within it, e.g. `database-7`.
pub fn server_id(category: &str, index: usize) -> String {
    format!("{category}-{index}")
}

/// Shared by the proxy (reads) and the plugins (writes).
#[derive(Debug)]
pub struct Registry {
    current: ArcSwap<Snapshot>,
    members: Mutex<Members>,
}

impl Registry {
    /// Registers every category of the config: spawned servers start not ready (they are
    /// published by the fleet once they accept connections), static backends start ready.
    pub fn new(config: &ValidConfig) -> Self {
        let categories = config
            .categories
            .iter()
            .map(|c| {
                let spawned = c.spawned_ports().enumerate().map(|(i, port)| Backend {
                    id: server_id(&c.name, i).into(),
                    addr: SocketAddr::new(config.fleet.host, port),
                    origin: Origin::Spawned,
                    ready: false,
                    state: Arc::default(),
                });
                let spawned: Vec<Backend> = if config.fleet.enabled {
                    spawned.collect()
                } else {
                    Vec::new()
                };
                let statics = c.static_backends.iter().map(|addr| Backend {
                    id: format!("{}@{addr}", c.name).into(),
                    addr: *addr,
                    origin: Origin::Static,
                    ready: true,
                    state: Arc::default(),
                });
                CategoryMembers {
                    name: c.name.as_str().into(),
                    mcp_path: c.mcp_path.as_str().into(),
                    strategy: config.proxy.strategy,
                    memory: StrategyMemory::default(),
                    members: spawned.into_iter().chain(statics).collect(),
                }
            })
            .collect();
        let members = Members { categories };
        Self {
            current: ArcSwap::from_pointee(members.snapshot()),
            members: Mutex::new(members),
        }
    }

    /// The current snapshot, for the hot path: one atomic load, no lock.
    pub fn load(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// Marks servers ready or not (by address) and publishes one new snapshot for the lot.
    /// Returns how many members changed.
    pub fn set_ready(&self, changes: &[(SocketAddr, bool)]) -> usize {
        let mut members = self.lock();
        let mut changed = 0;
        for c in &mut members.categories {
            for b in &mut c.members {
                if let Some((_, ready)) = changes.iter().find(|(addr, _)| *addr == b.addr) {
                    if b.ready != *ready {
                        b.ready = *ready;
                        changed += 1;
                    }
                }
            }
        }
        if changed > 0 {
            self.current.store(Arc::new(members.snapshot()));
        }
        changed
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

    fn registry() -> Registry {
        let config = crate::config::parse(
            r#"
[categories.a]
ports = "41000-41002"
[categories.b]
backends = ["127.0.0.1:7000", "127.0.0.1:7001"]
"#,
            Path::new("t.toml"),
            Path::new("."),
        )
        .expect("valid");
        Registry::new(&config)
    }

    #[test]
    fn spawned_start_unready_static_start_ready() {
        let r = registry();
        let snap = r.load();
        assert_eq!(snap.known, "a, b");
        let a = snap.category("a").expect("a");
        assert_eq!(a.all.len(), 3);
        assert!(a.pick().is_none());
        let b = snap.category("b").expect("b");
        assert_eq!(b.ready_count(), 2);
        assert!(snap.category("c").is_none());
    }

    #[test]
    fn publishing_swaps_a_snapshot_and_keeps_live_state() {
        let r = registry();
        let addr: SocketAddr = "127.0.0.1:41001".parse().expect("addr");
        let before = r.load().category("a").expect("a").all[1].state.clone();
        let guard = before.start_request();
        assert_eq!(r.set_ready(&[(addr, true)]), 1);
        assert_eq!(r.set_ready(&[(addr, true)]), 0, "no change, no swap");
        let snap = r.load();
        let a = snap.category("a").expect("a");
        let picked = a.pick().expect("one ready");
        assert_eq!(picked.addr, addr);
        assert_eq!(picked.state.in_flight(), 1, "counters carried over");
        drop(guard);
        assert_eq!(picked.state.in_flight(), 0);
        assert!(a.ready_by_addr(&addr).is_some());
        let other: SocketAddr = "127.0.0.1:41000".parse().expect("addr");
        assert!(
            a.ready_by_addr(&other).is_none(),
            "registered but not ready"
        );
        let stats = snap.stats();
        assert_eq!((stats.ready, stats.total), (3, 5));
    }
}
