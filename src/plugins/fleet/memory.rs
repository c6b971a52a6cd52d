//! The fleet's side of memory: admission of new servers against `fleet.memory_budget`, the
//! running servers the memory watcher samples (with their category's policy), the samples it
//! takes, the actions it orders, and the events (policy actions, OOM kills) `GET /memory` lists.

use super::supervisor::{ServerState, Want};
use super::{lock, Fleet};
use crate::api::{MemoryActionTaken, MemoryEvent};
use crate::config::{MemoryAction, MemoryBudget};
use crate::procfs::meminfo;
use crate::upstream::clock::unix_now;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// What a server takes before any has been measured: a built-in server's PSS is under 1 MiB,
/// its RSS about 5 MiB; 8 MiB keeps admission on the safe side for unknown commands.
pub(super) const FIRST_SERVER_GUESS: u64 = 8 << 20;

/// A running server as the memory watcher sees it.
#[derive(Debug, Clone)]
pub struct MemoryTarget {
    pub id: Arc<str>,
    pub category: Arc<str>,
    pub pid: u32,
    pub limit: u64,
    pub action: MemoryAction,
    /// The watcher's last sample (PSS), if it has taken one.
    pub bytes: Option<u64>,
    /// A child of a stdio server (its number; `id` is `{server}.{number}`): the policy acts on
    /// the child, not on the bridge.
    pub child: Option<u64>,
}

impl Fleet {
    /// Whether starting `n` more servers keeps the machine within `fleet.memory_budget`:
    /// memory in use now plus `n` times what a running server takes on average (its last
    /// sample), or a guess before any was sampled.
    pub(super) fn memory_budget_allows(&self, n: usize) -> Result<(), String> {
        if n == 0 {
            return Ok(());
        }
        let sampled: Vec<u64> = self
            .memory_targets()
            .iter()
            .filter_map(|t| t.bytes)
            .collect();
        let per_server = if sampled.is_empty() {
            FIRST_SERVER_GUESS
        } else {
            sampled.iter().sum::<u64>() / sampled.len() as u64
        };
        budget_allows(self.inner.settings().memory_budget, n, per_server)
    }
}

/// Whether `n` more processes of about `per_server` bytes each keep the machine within `budget`.
pub(super) fn budget_allows(budget: MemoryBudget, n: usize, per_server: u64) -> Result<(), String> {
    let Some((total, available)) = meminfo() else {
        return Ok(()); // no /proc/meminfo: nothing to measure against
    };
    let budget = match budget {
        MemoryBudget::Percent(p) => total / 100 * u64::from(p),
        MemoryBudget::Bytes(b) => b,
    };
    let used = total.saturating_sub(available);
    let expected = used + per_server * n as u64;
    if expected > budget {
        return Err(format!(
                "starting {n} servers would bring memory use to about {} MiB ({} MiB in use + {n} x {} MiB), over fleet.memory_budget of {} MiB",
                expected >> 20,
                used >> 20,
                per_server >> 20,
                budget >> 20
            ));
    }
    Ok(())
}

impl Fleet {
    /// Running servers with their memory policy, for the memory watcher. The policy comes from
    /// the current plan, so a reload that changes `max_memory_mb` or `memory_action` applies to
    /// the watcher at once (the kernel limit follows at the server's next start).
    pub fn memory_targets(&self) -> Vec<MemoryTarget> {
        let policy: HashMap<Arc<str>, (u64, MemoryAction)> = lock(&self.inner.plan)
            .iter()
            .map(|s| (Arc::clone(&s.id), (s.memory_limit, s.memory_action)))
            .collect();
        let mut targets = Vec::new();
        for m in lock(&self.inner.servers).values() {
            let st = m.status.read();
            let (limit, action) = policy
                .get(&m.spec.id)
                .copied()
                .unwrap_or((m.spec.memory_limit, m.spec.memory_action));
            // A stdio server's processes are its children, each held to the category's policy.
            if let Some(bridge) = &st.bridge {
                for (number, pid, bytes) in bridge.children() {
                    targets.push(MemoryTarget {
                        id: format!("{}.{number}", m.spec.id).into(),
                        category: Arc::clone(&m.spec.category),
                        pid,
                        limit,
                        action,
                        bytes,
                        child: Some(number),
                    });
                }
                continue;
            }
            let Some(pid) = st.pid.filter(|_| st.state == ServerState::Running) else {
                continue;
            };
            targets.push(MemoryTarget {
                id: Arc::clone(&m.spec.id),
                category: Arc::clone(&m.spec.category),
                pid,
                limit,
                action,
                bytes: st.memory,
                child: None,
            });
        }
        targets
    }

    /// The server a memory target belongs to (a child's id is `{server}.{number}`).
    fn server_of(id: &str) -> &str {
        id.rsplit_once('.').map_or(id, |(server, _)| server)
    }

    /// Keeps the watcher's samples, shown by `GET /servers`, `/memory`, the metrics and the
    /// dashboard (one sampling loop for all of them).
    pub fn record_memory(&self, samples: &[(Arc<str>, u64)]) {
        let servers = lock(&self.inner.servers);
        let mut bridged: HashMap<&str, u64> = HashMap::new();
        for (id, bytes) in samples {
            if let Some(m) = servers.get(id) {
                m.status.read().memory = Some(*bytes);
            } else if let Some((server, number)) = id.rsplit_once('.') {
                let Some(m) = servers.get(server) else {
                    continue;
                };
                if let (Some(bridge), Ok(n)) = (&m.status.read().bridge, number.parse()) {
                    bridge.record_memory(n, *bytes);
                }
                *bridged.entry(server).or_default() += bytes;
            }
        }
        // A bridged server takes what its children take.
        for m in servers.values() {
            let mut st = m.status.read();
            if st.bridge.is_some() {
                st.memory = bridged.get(m.spec.id.as_ref()).copied();
            }
        }
    }

    /// The memory policy acts on `id`: restart it (drain first) or only record the alert.
    pub fn memory_action(&self, target: &MemoryTarget, bytes: u64) {
        let action = match (target.action, target.child) {
            (MemoryAction::Restart, None) => {
                self.want(&target.id, Want::Restart);
                MemoryActionTaken::Restart
            }
            // A child is ended: its session gets 404 and the client's next session starts a
            // new one (a shared child is started again by the next request).
            (MemoryAction::Restart, Some(number)) => {
                let servers = lock(&self.inner.servers);
                if let Some(m) = servers.get(Self::server_of(&target.id)) {
                    if let Some(bridge) = &m.status.read().bridge {
                        bridge.end_child(number);
                    }
                }
                MemoryActionTaken::Restart
            }
            (MemoryAction::Alert, _) => MemoryActionTaken::Alert,
        };
        tracing::warn!(
            server = %target.id,
            pss_mb = bytes >> 20,
            limit_mb = target.limit >> 20,
            ?action,
            "server over its memory limit"
        );
        self.inner.memory_event(MemoryEvent {
            at: unix_now(),
            id: target.id.to_string(),
            action,
            bytes: Some(bytes),
            limit: target.limit,
        });
    }

    pub fn memory_events(&self) -> Vec<MemoryEvent> {
        lock(&self.inner.memory_events).iter().cloned().collect()
    }

    /// OOM kills per server id (only servers that had one).
    pub fn oom_kills(&self) -> BTreeMap<String, u32> {
        lock(&self.inner.servers)
            .iter()
            .filter_map(|(id, m)| {
                let n = m.status.read().oom_kills;
                (n > 0).then(|| (id.to_string(), n))
            })
            .collect()
    }
}
