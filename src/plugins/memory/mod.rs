//! The memory manager (the seed's memory-manager-1000): samples every running server's resident
//! memory every `fleet.memory_interval` and applies its category's policy to a server over its
//! `max_memory_mb` for two samples in a row (one sample can be a transient peak): `restart`
//! (drain, stop, start again) or `alert` (log and record). Where the kernel enforces the limit
//! too (a memory cgroup), an overshoot ends in an OOM kill, which the fleet recognises apart
//! from a crash. Runs on the control thread; reading 1000 `/proc/PID/statm` files is its whole
//! cost.

use crate::plugins::fleet::{rss_bytes, Fleet};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Samples until the runtime ends.
pub async fn watch(fleet: Fleet) {
    let mut over: HashMap<Arc<str>, u32> = HashMap::new();
    loop {
        let interval = fleet.settings().memory_interval;
        tokio::time::sleep(interval).await;
        let targets = fleet.memory_targets();
        let mut still_over = HashMap::new();
        for t in targets {
            let Some(bytes) = rss_bytes(t.pid) else {
                continue;
            };
            if bytes <= t.limit {
                continue;
            }
            let n = over.get(&t.id).copied().unwrap_or(0) + 1;
            if n >= 2 {
                fleet.memory_action(&t, bytes);
            } else {
                still_over.insert(Arc::clone(&t.id), n);
            }
        }
        over = still_over;
    }
}

#[derive(Debug, Serialize)]
pub struct CategoryMemory {
    pub category: String,
    pub servers: usize,
    pub rss_bytes: u64,
    pub limit_bytes: u64,
    pub over_limit: usize,
}

#[derive(Debug, Serialize)]
pub struct ServerMemory {
    pub id: String,
    pub pid: u32,
    pub rss_bytes: u64,
    pub limit_bytes: u64,
}

/// `GET /memory` and `mcp-fleet memory`: per-category totals and limits, the top 10 servers,
/// policy actions and OOM kills.
#[derive(Debug, Serialize)]
pub struct MemoryReport {
    pub enforcement: &'static str,
    pub machine_total_bytes: u64,
    pub machine_available_bytes: u64,
    pub categories: Vec<CategoryMemory>,
    pub top: Vec<ServerMemory>,
    pub events: Vec<crate::plugins::fleet::MemoryEvent>,
    pub oom_kills: BTreeMap<String, u32>,
}

pub fn report(fleet: &Fleet) -> MemoryReport {
    let mut by: Vec<CategoryMemory> = Vec::new();
    let mut servers = Vec::new();
    for t in fleet.memory_targets() {
        let rss = rss_bytes(t.pid).unwrap_or(0);
        let c = match by
            .iter_mut()
            .position(|c| c.category == t.category.as_ref())
        {
            Some(i) => &mut by[i],
            None => {
                by.push(CategoryMemory {
                    category: t.category.to_string(),
                    servers: 0,
                    rss_bytes: 0,
                    limit_bytes: t.limit,
                    over_limit: 0,
                });
                let last = by.len() - 1;
                &mut by[last]
            }
        };
        c.servers += 1;
        c.rss_bytes += rss;
        c.over_limit += usize::from(rss > t.limit);
        servers.push(ServerMemory {
            id: t.id.to_string(),
            pid: t.pid,
            rss_bytes: rss,
            limit_bytes: t.limit,
        });
    }
    servers.sort_by_key(|s| std::cmp::Reverse(s.rss_bytes));
    servers.truncate(10);
    let (total, available) = crate::plugins::fleet::meminfo().unwrap_or((0, 0));
    MemoryReport {
        enforcement: fleet.memory_layer().name(),
        machine_total_bytes: total,
        machine_available_bytes: available,
        categories: by,
        top: servers,
        events: fleet.memory_events(),
        oom_kills: fleet.oom_kills(),
    }
}
