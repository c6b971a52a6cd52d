//! The fleet plugin: deploys servers in batches (each batch must accept connections before the
//! next starts), publishes ready servers into the upstream registry, restarts servers that exit
//! (with back-off, until too many restarts mark them failed), remembers which servers are meant to
//! run in the state dir, and carries out the operator's deploy, restart, retry and stop orders.
//!
//! Rooms: `plan` (the one owner of membership: which servers exist, from the config), `deploy`
//! (the orders: deploy, retry, restart, stop), `memory` (admission against the budget, the
//! policy's targets and actions), `supervisor` (one task per server), `child`, `cgroup`, `logfile`,
//! `ports`. The history of what was done is `crate::history`, shared with reloads.
//!
//! Every method runs on the control thread's runtime: children are forked from that one
//! long-lived thread, so `PR_SET_PDEATHSIG` fires only when the whole process dies. The fleet
//! knows nothing of HTTP routing.
//!
//! Locks: `plan`, then `servers`, then a server's status, never the other way round; `settings`
//! and `memory_events` are taken alone. Every critical section is a few assignments.

mod cgroup;
mod child;
mod deploy;
mod logfile;
mod memory;
mod plan;
mod ports;
pub mod reaper;
mod stdio;
mod supervisor;

pub use cgroup::MemoryLayer;
pub use child::PARENT_PID_ENV;
pub use memory::MemoryTarget;
pub use plan::{members, plan, PlanDiff, ServerSpec};
pub use supervisor::ServerState;

use crate::api::{EntryKind, MemoryEvent, ServerHealth, ServerInfo};
use crate::config::{DeployOnStart, ValidConfig};
use crate::history::History;
use crate::state_file::{self, Loaded};
use crate::upstream::Registry;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use supervisor::{Desired, SharedStatus};
use tokio::sync::watch;

/// What readiness waits for until the first deployment is done.
const FIRST_DEPLOYMENT: &str = "the fleet's first deployment";

/// File in the state dir that lists the servers meant to run.
pub const DEPLOYMENT_FILE: &str = "deployment.json";
/// Memory events kept.
const EVENTS: usize = 200;

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("cannot resolve command {program:?}: {source}")]
    Program {
        program: String,
        source: std::io::Error,
    },
    #[error("no server {0:?} in the configuration")]
    UnknownServer(String),
    #[error("server {0:?} is not deployed")]
    NotDeployed(String),
    #[error("server {id:?} did not come back: {why}")]
    NotReady { id: String, why: String },
}

/// Fleet settings that a reload may change.
#[derive(Debug, Clone)]
pub struct FleetSettings {
    pub batch_size: usize,
    pub ready_timeout: Duration,
    pub stop_grace: Duration,
    pub drain_timeout: Duration,
    pub max_restarts: u32,
    pub restart_window: Duration,
    pub deploy_on_start: DeployOnStart,
    pub memory_interval: Duration,
    pub memory_budget: crate::config::MemoryBudget,
    pub max_children: usize,
}

impl FleetSettings {
    fn from_config(config: &ValidConfig) -> Self {
        let f = &config.fleet;
        Self {
            batch_size: f.batch_size,
            ready_timeout: f.ready_timeout,
            stop_grace: f.stop_grace,
            drain_timeout: f.drain_timeout,
            max_restarts: f.max_restarts,
            restart_window: f.restart_window,
            deploy_on_start: f.deploy_on_start,
            memory_interval: f.memory_interval,
            memory_budget: f.memory_budget,
            max_children: f.max_children,
        }
    }
}

/// A server the fleet runs.
struct Managed {
    spec: ServerSpec,
    status: SharedStatus,
    desired: watch::Sender<Desired>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Debug, Serialize, Deserialize)]
struct DeploymentRecord {
    version: u32,
    deployed: Vec<String>,
}

pub struct Inner {
    pub(crate) registry: Arc<Registry>,
    /// Every server the config describes, in global index order.
    plan: Mutex<Vec<ServerSpec>>,
    servers: Mutex<BTreeMap<Arc<str>, Managed>>,
    settings: Mutex<FleetSettings>,
    state_path: PathBuf,
    pub(crate) shutdown: watch::Sender<bool>,
    history: Arc<History>,
    ready: AtomicUsize,
    pub(crate) cgroups: cgroup::Cgroups,
    memory_events: Mutex<VecDeque<MemoryEvent>>,
    /// Children of stdio servers alive now, across the fleet (`fleet.max_children`).
    pub(crate) children: AtomicUsize,
    watchdog: Mutex<Option<Watchdog>>,
}

/// The running watchdog (`reaper`): its pipe open as long as this process lives.
struct Watchdog {
    child: std::process::Child,
    pipe: std::process::ChildStdin,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here is a few assignments; a panic in one leaves the data usable.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Inner {
    pub(crate) fn settings(&self) -> FleetSettings {
        lock(&self.settings).clone()
    }

    /// Server `id`'s bridge settings in the current plan (a reload may have changed its
    /// limits since its spec was taken).
    pub(crate) fn planned_stdio(&self, id: &str) -> Option<crate::config::StdioConfig> {
        lock(&self.plan)
            .iter()
            .find(|s| s.id.as_ref() == id)
            .and_then(|s| s.stdio)
    }

    pub(crate) fn census_up(&self, id: &str) {
        let now = self.ready.fetch_add(1, Ordering::AcqRel) + 1;
        let total = lock(&self.servers).len();
        tracing::debug!(server = id, ready = now, total, "server ready");
        if now == total {
            tracing::info!(total, "all deployed servers ready");
        }
    }

    pub(crate) fn census_down(&self) {
        self.ready.fetch_sub(1, Ordering::AcqRel);
    }

    pub(crate) fn memory_event(&self, event: MemoryEvent) {
        let mut events = lock(&self.memory_events);
        events.push_back(event);
        while events.len() > EVENTS {
            events.pop_front();
        }
    }
}

/// Handle to the fleet; cheap to clone.
#[derive(Clone)]
pub struct Fleet {
    inner: Arc<Inner>,
}

impl Fleet {
    /// Takes over the plan (the registry was built from the same plan); nothing runs until
    /// `start` or `deploy`.
    pub fn new(
        config: &ValidConfig,
        specs: Vec<ServerSpec>,
        registry: Arc<Registry>,
        history: Arc<History>,
    ) -> Self {
        if config.fleet.reserve_ports && !specs.is_empty() {
            let ranges: Vec<_> = config
                .categories
                .iter()
                .filter_map(|c| c.ports.clone())
                .collect();
            match ports::reserve(&ranges) {
                Ok(true) => tracing::info!(
                    ?ranges,
                    "added the fleet's ports to net.ipv4.ip_local_reserved_ports"
                ),
                Ok(false) => {}
                Err(e) => tracing::warn!(
                    error = %e,
                    "cannot reserve the fleet's ports (fleet.reserve_ports); outgoing connections may take them"
                ),
            }
        }
        registry.hold(FIRST_DEPLOYMENT);
        let (shutdown, _) = watch::channel(false);
        let cgroups = cgroup::Cgroups::detect(config.fleet.kernel_memory_limit);
        tracing::info!(
            layer = cgroups.layer.name(),
            tree_kill = if cgroups.can_kill() {
                "cgroup.kill"
            } else {
                "process group"
            },
            "memory enforcement"
        );
        // The watchdog that ends the fleet's cgroups if this process dies without stopping them.
        let watchdog = match cgroups.dirs() {
            dirs if dirs.is_empty() || specs.is_empty() => None,
            dirs => match reaper::start(&dirs) {
                Ok((child, pipe)) => Some(Watchdog { child, pipe }),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start the fleet's watchdog: a kill -9 of serve may leave helpers the servers forked");
                    None
                }
            },
        };
        Self {
            inner: Arc::new(Inner {
                watchdog: Mutex::new(watchdog),
                registry,
                plan: Mutex::new(specs),
                servers: Mutex::new(BTreeMap::new()),
                settings: Mutex::new(FleetSettings::from_config(config)),
                state_path: config.fleet.state_dir.join(DEPLOYMENT_FILE),
                shutdown,
                history,
                ready: AtomicUsize::new(0),
                cgroups,
                memory_events: Mutex::new(VecDeque::new()),
                children: AtomicUsize::new(0),
            }),
        }
    }

    /// Brings back the fleet the state dir records, or, without a record, what
    /// `fleet.deploy_on_start` says.
    pub async fn start(&self) -> crate::api::Entry {
        let plan_ids: Vec<Arc<str>> = lock(&self.inner.plan)
            .iter()
            .map(|s| Arc::clone(&s.id))
            .collect();
        let policy = self.inner.settings().deploy_on_start;
        let mut notes = Vec::new();
        let by_policy = || match policy {
            DeployOnStart::All => plan_ids.clone(),
            DeployOnStart::None => Vec::new(),
        };
        let ids: Vec<Arc<str>> = match state_file::read_json::<DeploymentRecord>(
            &self.inner.state_path,
        ) {
            Loaded::Found(record) => {
                let wanted: HashSet<&str> = record.deployed.iter().map(String::as_str).collect();
                let unknown = record
                    .deployed
                    .iter()
                    .filter(|id| !plan_ids.iter().any(|p| p.as_ref() == id.as_str()))
                    .count();
                if unknown > 0 {
                    notes.push(format!(
                        "{unknown} recorded servers are no longer in the configuration"
                    ));
                }
                plan_ids
                    .iter()
                    .filter(|id| wanted.contains(id.as_ref()))
                    .cloned()
                    .collect()
            }
            Loaded::Missing => by_policy(),
            Loaded::Corrupt { reason, moved_to } => {
                let note = format!(
                        "deployment record {} is unreadable ({reason}); moved to {}; deploying per fleet.deploy_on_start",
                        self.inner.state_path.display(),
                        moved_to.map_or("(could not move it)".into(), |p| p.display().to_string())
                    );
                tracing::error!("{note}");
                notes.push(note);
                by_policy()
            }
        };
        let mut d = self.deploy_ids(EntryKind::Startup, ids).await;
        d.notes.extend(notes);
        d
    }

    /// Replaces the plan after a reload and says which servers it adds, removes and changes,
    /// with the spawned members the registry is to publish.
    pub fn replan(
        &self,
        config: &ValidConfig,
    ) -> Result<(PlanDiff, Vec<crate::upstream::SpawnedMember>), FleetError> {
        let new = plan(config)?;
        *lock(&self.inner.settings) = FleetSettings::from_config(config);
        let mut old = lock(&self.inner.plan);
        let servers = lock(&self.inner.servers);
        let running: BTreeMap<&Arc<str>, &ServerSpec> =
            servers.iter().map(|(id, m)| (id, &m.spec)).collect();
        let diff = plan::diff(&old, &new, &running);
        let spawned = members(&new);
        // Running bridges take new session limits in place (a change of isolation or start
        // replaces the server instead: `diff` says so).
        for planned in &new {
            let Some(m) = servers.get(&planned.id) else {
                continue;
            };
            if let (Some(bridge), Some(stdio)) = (&m.status.read().bridge, planned.stdio) {
                bridge.set_limits(stdio::Limits::of(&stdio));
            }
        }
        drop(servers);
        // Running servers keep the spec they were started with until they are replaced.
        *old = new;
        Ok((diff, spawned))
    }

    /// The first deployment is done (whatever its outcome: failed servers are retried and
    /// shown, they do not keep the instance out of rotation).
    pub fn started(&self) {
        self.inner.registry.release(FIRST_DEPLOYMENT);
    }

    /// Whether the current plan has a server `id`.
    pub fn is_planned(&self, id: &str) -> bool {
        lock(&self.inner.plan).iter().any(|s| s.id.as_ref() == id)
    }

    /// Whether `id` is deployed (supervised) now.
    pub fn is_deployed(&self, id: &str) -> bool {
        lock(&self.inner.servers).contains_key(id)
    }

    /// Addresses of deployed servers with these ids.
    pub fn addrs_of(&self, ids: &[Arc<str>]) -> Vec<std::net::SocketAddr> {
        let servers = lock(&self.inner.servers);
        ids.iter()
            .filter_map(|id| servers.get(id).map(|m| m.spec.addr))
            .collect()
    }

    pub fn settings(&self) -> FleetSettings {
        self.inner.settings()
    }

    /// Every deployed server with its live state and what the proxy makes of it
    /// (`GET /servers`).
    pub fn servers(&self) -> Vec<ServerInfo> {
        let live = self.inner.registry.load();
        let now = crate::upstream::clock::now_ms();
        let by_addr: std::collections::HashMap<std::net::SocketAddr, &crate::upstream::Backend> =
            live.sets
                .iter()
                .flat_map(|set| set.all.iter())
                .map(|b| (b.addr, b))
                .collect();
        // Lock order: plan, then servers (see the module doc); no copy of the plan needed.
        let plan = lock(&self.inner.plan);
        let servers = lock(&self.inner.servers);
        plan.iter()
            .enumerate()
            .filter_map(|(index, s)| {
                let m = servers.get(&s.id)?;
                let st = m.status.read();
                let backend = by_addr.get(&m.spec.addr).copied();
                let health = match backend {
                    _ if st.state != ServerState::Running => ServerHealth::Down,
                    Some(b) if !b.state.usable(now) => ServerHealth::Ejected,
                    Some(b) if b.healthy => ServerHealth::Healthy,
                    _ => ServerHealth::Unhealthy,
                };
                Some(ServerInfo {
                    id: s.id.to_string(),
                    index,
                    category: s.category.to_string(),
                    port: m.spec.addr.port(),
                    pid: st.pid,
                    state: st.state,
                    uptime_s: st.up_since.map(|t| t.elapsed().as_secs()),
                    restarts: st.restarts,
                    memory_bytes: st.memory,
                    last_error: st.last_error.clone(),
                    health,
                    draining: backend.is_some_and(|b| b.draining),
                    stdio: st
                        .bridge
                        .as_ref()
                        .map(|b| b.stats.snapshot(b.session_count())),
                })
            })
            .collect()
    }

    /// How many servers the config describes.
    pub fn planned(&self) -> usize {
        lock(&self.inner.plan).len()
    }

    /// Writes the set of deployed servers to the state dir.
    fn save(&self) {
        let deployed: Vec<String> = {
            let plan = lock(&self.inner.plan);
            let servers = lock(&self.inner.servers);
            plan.iter()
                .filter(|s| servers.contains_key(&s.id))
                .map(|s| s.id.to_string())
                .collect()
        };
        let record = DeploymentRecord {
            version: 1,
            deployed,
        };
        if let Err(e) = state_file::write_json(&self.inner.state_path, &record) {
            tracing::error!(error = %e, "cannot record the deployment; a restart may not bring back the same fleet");
        }
    }

    pub fn memory_layer(&self) -> MemoryLayer {
        self.inner.cgroups.layer
    }

    /// Stops every server (SIGTERM, then SIGKILL after the grace) and waits for them.
    pub async fn shutdown(&self) {
        let _ = self.inner.shutdown.send(true);
        let tasks: Vec<_> = lock(&self.inner.servers)
            .values_mut()
            .map(|m| std::mem::replace(&mut m.task, tokio::spawn(async {})))
            .collect();
        for t in tasks {
            let _ = t.await;
        }
        self.inner.cgroups.cleanup();
        // Every server is stopped: the watchdog finds nothing to do and exits.
        if let Some(mut w) = lock(&self.inner.watchdog).take() {
            drop(w.pipe);
            let _ = w.child.wait();
        }
    }
}
