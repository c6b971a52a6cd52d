//! The writers' side of membership: how a reloaded config and plan, a drain's end, and a DNS
//! answer change the member lists the snapshots are built from. A member's drain carries the
//! number of whoever began it (a reload or a resolution), so each timer ends only its own.

use super::{
    host_header, Backend, CategoryMembers, Drained, Member, Origin, Registry, SpawnedMember,
};
use crate::config::ValidConfig;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// The members a config and the fleet's plan describe, all fresh (not ready, never checked).
pub(super) fn desired_members(
    config: &ValidConfig,
    spawned: &[SpawnedMember],
) -> Vec<CategoryMembers> {
    let healthy = !config.health.enabled;
    let proxy = Arc::new(config.proxy.clone());
    config
        .categories
        .iter()
        .map(|c| {
            let weight_of = |key: &str| c.server_weights.get(key).copied().unwrap_or(c.weight);
            let fresh = |backend: Backend, ready_epoch| Member {
                backend,
                ready_epoch,
                desired: true,
                drain: None,
            };
            let spawned = spawned.iter().filter(|m| *m.category == *c.name).map(|m| {
                fresh(
                    Backend {
                        weight: weight_of(&m.id),
                        id: Arc::clone(&m.id),
                        host: host_header(m.addr),
                        addr: m.addr,
                        origin: Origin::Spawned,
                        ready: false,
                        healthy,
                        draining: false,
                        state: Arc::default(),
                    },
                    0,
                )
            });
            let statics = c.static_backends.iter().map(|addr| {
                fresh(
                    Backend {
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
                    1,
                )
            });
            CategoryMembers {
                name: c.name.as_str().into(),
                mcp_path: c.mcp_path.as_str().into(),
                bridged: c.stdio.is_some(),
                strategy: c.strategy,
                hash_header: c
                    .hash_header
                    .as_deref()
                    .and_then(|h| http::HeaderName::from_bytes(h.as_bytes()).ok()),
                access: Arc::new(super::CategoryAccess {
                    auth: c.auth.clone(),
                    upstream_headers: c.upstream_headers.clone(),
                }),
                proxy: Arc::clone(&proxy),
                shared: Arc::default(),
                members: spawned.chain(statics).collect(),
                desired: true,
                weight: c.weight,
            }
        })
        .collect()
}

impl Registry {
    /// Applies a reloaded config and plan: categories and members are rebuilt from them,
    /// keeping the live state (counters, ejection, health, readiness) of every member whose
    /// address stays, and the strategy cursor and retry budget of every category that stays.
    /// Members that leave, and those in `replace` (their command changed), are kept but draining
    /// (no new requests, their sessions still served) until `finish_drain(reload)`. A member
    /// that was leaving and is configured again leaves its drain at once, sessions kept. Returns
    /// the members that began draining now and how long building and swapping took.
    pub fn apply(
        &self,
        config: &ValidConfig,
        spawned: &[SpawnedMember],
        replace: &HashSet<SocketAddr>,
        reload: u64,
    ) -> (Vec<SocketAddr>, Duration, Duration) {
        let mut members = self.lock();
        let mut fresh = desired_members(config, spawned);
        let mut old: HashMap<Arc<str>, CategoryMembers> = members
            .categories
            .drain(..)
            .map(|c| (Arc::clone(&c.name), c))
            .collect();
        let mut draining = Vec::new();
        let begin = |m: &mut Member, draining: &mut Vec<SocketAddr>| {
            m.backend.draining = true;
            if m.drain.is_none() {
                m.drain = Some(reload);
                draining.push(m.backend.addr);
            }
        };
        let discovering: HashSet<&str> = config
            .categories
            .iter()
            .filter(|c| c.discover.is_some())
            .map(|c| c.name.as_str())
            .collect();
        for c in &mut fresh {
            let Some(mut prev) = old.remove(&c.name) else {
                continue;
            };
            c.shared = Arc::clone(&prev.shared);
            // Discovered members are the discovery's to change, not the config's: they stay
            // while the category still discovers (its next resolution may drain them).
            if discovering.contains(&*c.name) {
                let (keep, rest): (Vec<Member>, Vec<Member>) = prev
                    .members
                    .into_iter()
                    .partition(|m| m.backend.origin == Origin::Discovered);
                prev.members = rest;
                for mut m in keep {
                    m.backend.weight = c.weight;
                    if !c.members.iter().any(|x| x.backend.addr == m.backend.addr) {
                        c.members.push(m);
                    }
                }
            }
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
                    // Only a replacement still pending keeps (or begins) a drain: one that was
                    // leaving, or whose command is back to what runs, is taken back now.
                    if replace.contains(&m.backend.addr) {
                        m.drain = p.drain.filter(|_| p.desired);
                        begin(m, &mut draining);
                    }
                }
            }
            // Members that left the config drain at the end of the list.
            for mut p in prev.members {
                if p.desired {
                    p.drain = None;
                }
                p.desired = false;
                begin(&mut p, &mut draining);
                c.members.push(p);
            }
        }
        // Whole categories that left keep serving their sessions while they drain; they take no
        // new requests (every member is draining).
        for (_, mut gone) in old {
            gone.desired = false;
            for m in &mut gone.members {
                if m.desired {
                    m.drain = None;
                }
                m.desired = false;
                begin(m, &mut draining);
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

    /// Ends the drains reload number `reload` began (and no other): members no longer in the
    /// config are removed (their sessions now get 404), members being replaced start over as
    /// not ready. Returns their ids.
    pub fn finish_drain(&self, reload: u64) -> Drained {
        let mut members = self.lock();
        let mut done = Drained::default();
        for c in &mut members.categories {
            c.members.retain(|m| {
                let ends = m.drain == Some(reload) && !m.desired;
                if ends {
                    done.removed.push(Arc::clone(&m.backend.id));
                }
                !ends
            });
            for m in &mut c.members {
                if m.drain == Some(reload) {
                    m.drain = None;
                    m.backend.draining = false;
                    m.backend.ready = false;
                    done.replaced.push(Arc::clone(&m.backend.id));
                }
            }
        }
        members
            .categories
            .retain(|c| c.desired || !c.members.is_empty());
        self.publish(&members, None);
        done
    }

    /// A number for a drain begun now (reloads and discovery share the sequence, so
    /// `finish_drain` ends exactly the members one of them began draining).
    pub fn next_drain(&self) -> u64 {
        self.drains
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel)
            + 1
    }

    /// The addresses discovery found for `category` now: new ones join (ready; with active
    /// checks, out until they pass one), ones that left drain under number `drain` (sessions
    /// served until `finish_drain(drain)`), ones that come back before their drain ended are
    /// taken back at once. Returns the members that began draining; an unknown category is
    /// ignored (a reload removed it).
    pub fn set_discovered(
        &self,
        category: &str,
        addrs: &[SocketAddr],
        drain: u64,
    ) -> Vec<SocketAddr> {
        let checks = *self
            .health_checks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut members = self.lock();
        let Some(c) = members
            .categories
            .iter_mut()
            .find(|c| *c.name == *category && c.desired)
        else {
            return Vec::new();
        };
        let wanted: HashSet<SocketAddr> = addrs.iter().copied().collect();
        let mut changed = false;
        let mut draining = Vec::new();
        for m in c
            .members
            .iter_mut()
            .filter(|m| m.backend.origin == Origin::Discovered)
        {
            let want = wanted.contains(&m.backend.addr);
            if want && !m.desired {
                m.desired = true;
                m.drain = None;
                m.backend.draining = false;
                changed = true;
            } else if !want && m.desired {
                m.desired = false;
                m.backend.draining = true;
                m.drain = Some(drain);
                draining.push(m.backend.addr);
                changed = true;
            }
        }
        let weight = c.weight;
        for addr in addrs {
            if c.members.iter().any(|m| m.backend.addr == *addr) {
                continue;
            }
            c.members.push(Member {
                backend: Backend {
                    id: format!("{}@{addr}", c.name).into(),
                    host: host_header(*addr),
                    addr: *addr,
                    origin: Origin::Discovered,
                    weight,
                    ready: true,
                    healthy: !checks,
                    draining: false,
                    state: Arc::default(),
                },
                ready_epoch: 1,
                desired: true,
                drain: None,
            });
            changed = true;
        }
        if changed {
            self.publish(&members, None);
        }
        draining
    }
}
