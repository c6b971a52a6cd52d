//! The memory manager (the seed's memory-manager-1000): samples every running server's PSS
//! (proportional set size: a page shared by N servers counts 1/N, so the figures add up to what
//! the fleet takes; RSS would count the shared binary once per server) every
//! `fleet.memory_interval`, and applies its category's policy to a server over its
//! `max_memory_mb` for two samples in a row (one sample can be a transient peak): `restart`
//! (drain, stop, start again) or `alert` (log and record). Where the kernel enforces the limit
//! too (a memory cgroup), an overshoot of the cgroup's charge ends in an OOM kill, which the fleet
//! recognises apart from a crash. Runs on the control thread; the samples it takes are the ones
//! `GET /servers`, `GET /memory`, the metrics and the dashboard show.

use crate::api::{CategoryMemory, MemoryMeasure, MemoryReport, ServerMemory};
use crate::plugins::fleet::Fleet;
use crate::procfs::{meminfo, pss_bytes};
use std::collections::HashMap;
use std::sync::Arc;

/// The figure every memory number of the fleet is, and the watcher enforces on.
pub const MEASURE: MemoryMeasure = MemoryMeasure::Pss;

/// Samples until the runtime ends.
pub async fn watch(fleet: Fleet) {
    let mut over: HashMap<Arc<str>, u32> = HashMap::new();
    loop {
        let interval = fleet.settings().memory_interval;
        tokio::time::sleep(interval).await;
        over = sample(&fleet, &over);
    }
}

/// One round: measure every running server, keep the figures, act on those over their limit
/// twice in a row. Returns who is over once.
fn sample(fleet: &Fleet, over: &HashMap<Arc<str>, u32>) -> HashMap<Arc<str>, u32> {
    let targets = fleet.memory_targets();
    let mut samples = Vec::with_capacity(targets.len());
    let mut still_over = HashMap::new();
    for t in targets {
        let Some(bytes) = pss_bytes(t.pid) else {
            continue;
        };
        samples.push((Arc::clone(&t.id), bytes));
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
    fleet.record_memory(&samples);
    still_over
}

/// `GET /memory` and `mcp-fleet memory`: per-category totals and limits, the top 10 servers,
/// policy actions and OOM kills, from the watcher's last samples.
pub fn report(fleet: &Fleet) -> MemoryReport {
    let mut by: Vec<CategoryMemory> = Vec::new();
    let mut servers = Vec::new();
    for t in fleet.memory_targets() {
        let bytes = t.bytes.unwrap_or(0);
        let i = match by.iter().position(|c| c.category == t.category.as_ref()) {
            Some(i) => i,
            None => {
                by.push(CategoryMemory {
                    category: t.category.to_string(),
                    servers: 0,
                    bytes: 0,
                    limit_bytes: t.limit,
                    over_limit: 0,
                });
                by.len() - 1
            }
        };
        let c = &mut by[i];
        c.servers += 1;
        c.bytes += bytes;
        c.over_limit += usize::from(bytes > t.limit);
        servers.push(ServerMemory {
            id: t.id.to_string(),
            pid: t.pid,
            bytes,
            limit_bytes: t.limit,
        });
    }
    servers.sort_by_key(|s| std::cmp::Reverse(s.bytes));
    servers.truncate(10);
    let (total, available) = meminfo().unwrap_or((0, 0));
    MemoryReport {
        enforcement: fleet.memory_layer().name().to_string(),
        measure: MEASURE,
        machine_total_bytes: total,
        machine_available_bytes: available,
        categories: by,
        top: servers,
        events: fleet.memory_events(),
        oom_kills: fleet.oom_kills(),
    }
}
