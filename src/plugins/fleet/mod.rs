//! The fleet plugin: deploys servers in batches (each batch must accept connections before the
//! next starts), publishes ready servers into the upstream registry, restarts servers that exit
//! (with back-off, until too many restarts mark them failed), remembers which servers are meant to
//! run in the state dir, and carries out the operator's deploy, restart, retry and stop orders.
//!
//! Every method runs on the control thread's runtime: children are forked from that one
//! long-lived thread, so `PR_SET_PDEATHSIG` fires only when the whole process dies. The fleet
//! knows nothing of HTTP routing.

mod cgroup;
mod child;
mod logfile;
mod plan;
mod ports;
mod supervisor;

pub use cgroup::MemoryLayer;

pub use plan::{plan, ServerSpec};
pub use supervisor::ServerState;

use crate::config::{DeployOnStart, ValidConfig};
use crate::state_file::{self, Loaded};
use crate::upstream::clock::unix_now;
use crate::upstream::Registry;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use supervisor::{Desired, SharedStatus, Want};
use tokio::sync::{oneshot, watch};

/// File in the state dir that lists the servers meant to run.
pub const DEPLOYMENT_FILE: &str = "deployment.json";
/// Deployments kept in the history.
const HISTORY: usize = 200;

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

/// What `GET /servers` shows of a server.
#[derive(Debug, Clone, Serialize)]
pub struct ServerInfo {
    pub id: String,
    pub index: usize,
    pub category: String,
    pub port: u16,
    pub pid: Option<u32>,
    pub state: ServerState,
    pub uptime_s: Option<u64>,
    pub restarts: u32,
    pub rss_bytes: Option<u64>,
    pub last_error: Option<String>,
}

/// One deployment, restart, retry or reload, for `GET /deployments`.
#[derive(Debug, Clone, Serialize)]
pub struct Deployment {
    pub seq: u64,
    pub kind: String,
    /// Seconds since the Unix epoch.
    pub started_at: u64,
    pub duration_ms: u64,
    pub requested: usize,
    pub deployed: Vec<String>,
    pub failed: Vec<Failure>,
    pub already: Vec<String>,
    pub outcome: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl Deployment {
    /// A history entry of `kind` for work that began at `started`, nothing deployed or failed
    /// yet; callers fill in what happened with struct update syntax. `seq` is set by `record`.
    pub fn new(kind: &str, started: Instant, outcome: &str) -> Self {
        let elapsed = started.elapsed();
        Self {
            seq: 0,
            kind: kind.into(),
            started_at: unix_now().saturating_sub(elapsed.as_secs()),
            duration_ms: elapsed.as_millis() as u64,
            requested: 0,
            deployed: Vec::new(),
            failed: Vec::new(),
            already: Vec::new(),
            outcome: outcome.into(),
            notes: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub id: String,
    pub error: String,
}

/// What a reload changes in the plan, by server id.
#[derive(Debug, Default)]
pub struct PlanDiff {
    pub added: Vec<Arc<str>>,
    pub removed: Vec<Arc<str>>,
    /// Same id, other address or command: drained, stopped and started anew.
    pub changed: Vec<Arc<str>>,
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
    history: Mutex<VecDeque<Deployment>>,
    seq: AtomicUsize,
    ready: AtomicUsize,
    pub(crate) cgroups: cgroup::Cgroups,
    memory_events: Mutex<VecDeque<MemoryEvent>>,
}

/// A running server as the memory watcher sees it.
#[derive(Debug, Clone)]
pub struct MemoryTarget {
    pub id: Arc<str>,
    pub category: Arc<str>,
    pub pid: u32,
    pub limit: u64,
    pub action: crate::config::MemoryAction,
}

/// A memory-policy action or an OOM kill, for `GET /memory`.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryEvent {
    /// Seconds since the Unix epoch.
    pub at: u64,
    pub id: String,
    /// "restart", "alert" or "oom-kill".
    pub action: &'static str,
    pub bytes: Option<u64>,
    pub limit: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here is a few assignments; a panic in one leaves the data usable.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Inner {
    pub(crate) fn settings(&self) -> FleetSettings {
        lock(&self.settings).clone()
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
        while events.len() > HISTORY {
            events.pop_front();
        }
    }
}

/// Handle to the fleet; cheap to clone.
#[derive(Clone)]
pub struct Fleet {
    inner: Arc<Inner>,
}

/// Resident memory of a process, from /proc (cheap enough to read for 1000 servers every few
/// seconds).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

impl Fleet {
    /// Plans the fleet from the config; nothing runs until `start` or `deploy`.
    pub fn new(config: &ValidConfig, registry: Arc<Registry>) -> Result<Self, FleetError> {
        let specs = plan(config)?;
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
        Ok(Self {
            inner: Arc::new(Inner {
                registry,
                plan: Mutex::new(specs),
                servers: Mutex::new(BTreeMap::new()),
                settings: Mutex::new(FleetSettings::from_config(config)),
                state_path: config.fleet.state_dir.join(DEPLOYMENT_FILE),
                shutdown,
                history: Mutex::new(VecDeque::new()),
                seq: AtomicUsize::new(0),
                ready: AtomicUsize::new(0),
                cgroups,
                memory_events: Mutex::new(VecDeque::new()),
            }),
        })
    }

    /// Brings back the fleet the state dir records, or, without a record, what
    /// `fleet.deploy_on_start` says.
    pub async fn start(&self) -> Deployment {
        let plan_ids: Vec<Arc<str>> = lock(&self.inner.plan)
            .iter()
            .map(|s| Arc::clone(&s.id))
            .collect();
        let policy = self.inner.settings().deploy_on_start;
        let mut notes = Vec::new();
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
            Loaded::Missing => match policy {
                DeployOnStart::All => plan_ids.clone(),
                DeployOnStart::None => Vec::new(),
            },
            Loaded::Corrupt { reason, moved_to } => {
                let note = format!(
                    "deployment record {} is unreadable ({reason}); moved to {}; deploying per fleet.deploy_on_start",
                    self.inner.state_path.display(),
                    moved_to.map_or("(could not move it)".into(), |p| p.display().to_string())
                );
                tracing::error!("{note}");
                notes.push(note);
                match policy {
                    DeployOnStart::All => plan_ids.clone(),
                    DeployOnStart::None => Vec::new(),
                }
            }
        };
        let mut d = self.deploy_ids("startup", ids).await;
        d.notes.extend(notes);
        d
    }

    /// The seed's deploy-batch: deploys the servers with global indexes
    /// `start_index .. start_index + batch_size`, in order.
    pub async fn deploy_range(&self, start_index: usize, batch_size: usize) -> Deployment {
        let ids: Vec<Arc<str>> = lock(&self.inner.plan)
            .iter()
            .skip(start_index)
            .take(batch_size)
            .map(|s| Arc::clone(&s.id))
            .collect();
        self.deploy_ids("deploy", ids).await
    }

    /// Deploys `ids` (planned servers) in batches of `fleet.batch_size`, recording the result.
    pub async fn deploy_ids(&self, kind: &str, ids: Vec<Arc<str>>) -> Deployment {
        let started = Instant::now();
        let settings = self.inner.settings();
        let total_planned = lock(&self.inner.plan).len();
        let mut deployed = Vec::new();
        let mut failed = Vec::new();
        let mut already = Vec::new();
        tracing::info!(
            kind,
            servers = ids.len(),
            batch_size = settings.batch_size,
            "deploying"
        );
        let new: Vec<&Arc<str>> = ids.iter().filter(|id| !self.is_deployed(id)).collect();
        if let Err(why) = self.memory_budget_allows(new.len()) {
            tracing::error!(kind, servers = new.len(), "deployment refused: {why}");
            return self.record(Deployment {
                requested: ids.len(),
                deployed,
                failed: new
                    .iter()
                    .map(|id| Failure {
                        id: id.to_string(),
                        error: "refused: memory budget".into(),
                    })
                    .collect(),
                already,
                notes: vec![why],
                ..Deployment::new(kind, started, "refused")
            });
        }
        for (batch_no, batch) in ids.chunks(settings.batch_size.max(1)).enumerate() {
            if *self.inner.shutdown.borrow() {
                break;
            }
            let mut waits = Vec::new();
            for id in batch {
                match self.launch(id) {
                    Some(rx) => waits.push((Arc::clone(id), rx)),
                    None => already.push(id.to_string()),
                }
            }
            for (id, rx) in waits {
                match rx.await {
                    Ok(Ok(())) => deployed.push(id.to_string()),
                    Ok(Err(error)) => failed.push(Failure {
                        id: id.to_string(),
                        error,
                    }),
                    Err(_) => failed.push(Failure {
                        id: id.to_string(),
                        error: "supervisor ended".into(),
                    }),
                }
            }
            let running = self.inner.ready.load(Ordering::Acquire);
            tracing::info!(
                kind,
                batch = batch_no + 1,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "deployment: {running}/{total_planned} ready ({})",
                self.progress_by_category()
            );
        }
        self.save();
        let outcome = if failed.is_empty() { "ok" } else { "partial" };
        if failed.is_empty() {
            tracing::info!(
                kind,
                deployed = deployed.len(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "deployment done"
            );
        } else {
            tracing::warn!(
                kind,
                deployed = deployed.len(),
                failed = failed.len(),
                "deployment done with failures; failed servers are retried with back-off"
            );
        }
        self.record(Deployment {
            requested: ids.len(),
            deployed,
            failed,
            already,
            ..Deployment::new(kind, started, outcome)
        })
    }

    /// Whether starting `n` more servers keeps the machine within `fleet.memory_budget`:
    /// memory in use now plus `n` times what a running server takes on average (8 MiB, a
    /// built-in server's RSS, before any runs).
    fn memory_budget_allows(&self, n: usize) -> Result<(), String> {
        if n == 0 {
            return Ok(());
        }
        let Some((total, available)) = meminfo() else {
            return Ok(()); // no /proc/meminfo: nothing to measure against
        };
        let budget = match self.inner.settings().memory_budget {
            crate::config::MemoryBudget::Percent(p) => total / 100 * u64::from(p),
            crate::config::MemoryBudget::Bytes(b) => b,
        };
        let rss: Vec<u64> = self
            .memory_targets()
            .iter()
            .filter_map(|t| rss_bytes(t.pid))
            .collect();
        let per_server = if rss.is_empty() {
            8 << 20
        } else {
            rss.iter().sum::<u64>() / rss.len() as u64
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

    /// "database 100/100, api 37/100": ready servers against planned ones, in config order.
    fn progress_by_category(&self) -> String {
        let plan = lock(&self.inner.plan);
        let servers = lock(&self.inner.servers);
        let mut out: Vec<(Arc<str>, usize, usize)> = Vec::new();
        for s in plan.iter() {
            let running = servers
                .get(&s.id)
                .is_some_and(|m| supervisor_state(&m.status) == ServerState::Running);
            match out.last_mut() {
                Some(last) if last.0 == s.category => {
                    last.2 += 1;
                    last.1 += usize::from(running);
                }
                _ => out.push((Arc::clone(&s.category), usize::from(running), 1)),
            }
        }
        out.iter()
            .map(|(c, r, t)| format!("{c} {r}/{t}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Starts supervising `id`; `None` when it is already deployed (or not planned).
    fn launch(&self, id: &Arc<str>) -> Option<oneshot::Receiver<Result<(), String>>> {
        let spec = lock(&self.inner.plan)
            .iter()
            .find(|s| &s.id == id)
            .cloned()?;
        let mut servers = lock(&self.inner.servers);
        if servers.contains_key(id) {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        let status = SharedStatus::default();
        let (desired, desired_rx) = watch::channel(Desired {
            want: Want::Run,
            generation: 0,
        });
        let task = tokio::spawn(supervisor::supervise(
            spec.clone(),
            Arc::clone(&status),
            desired_rx,
            Arc::clone(&self.inner),
            tx,
        ));
        servers.insert(
            Arc::clone(id),
            Managed {
                spec,
                status,
                desired,
                task,
            },
        );
        Some(rx)
    }

    fn want(&self, id: &str, want: Want) -> bool {
        let servers = lock(&self.inner.servers);
        let Some(m) = servers.get(id) else {
            return false;
        };
        m.desired.send_modify(|d| {
            d.want = want;
            d.generation += 1;
        });
        true
    }

    /// Starts failed servers again, with a fresh restart allowance.
    pub async fn retry_failed(&self) -> Deployment {
        let started = Instant::now();
        let failed: Vec<(Arc<str>, SharedStatus)> = lock(&self.inner.servers)
            .iter()
            .filter(|(_, m)| supervisor_state(&m.status) == ServerState::Failed)
            .map(|(id, m)| (Arc::clone(id), Arc::clone(&m.status)))
            .collect();
        for (id, _) in &failed {
            self.want(id, Want::Run);
        }
        let deadline = Instant::now() + self.inner.settings().ready_timeout;
        let mut deployed = Vec::new();
        let mut still = Vec::new();
        for (id, status) in failed.iter() {
            loop {
                let state = supervisor_state(status);
                if state == ServerState::Running {
                    deployed.push(id.to_string());
                    break;
                }
                if state == ServerState::Failed && started.elapsed() > Duration::from_millis(500)
                    || Instant::now() > deadline
                {
                    still.push(Failure {
                        id: id.to_string(),
                        error: lock(status)
                            .last_error
                            .clone()
                            .unwrap_or_else(|| format!("{state:?}")),
                    });
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let outcome = if still.is_empty() { "ok" } else { "partial" };
        self.record(Deployment {
            requested: failed.len(),
            deployed,
            failed: still,
            ..Deployment::new("retry-failed", started, outcome)
        })
    }

    /// Drains `id` (no new requests; those in flight may finish within the drain timeout),
    /// restarts it, and waits until it is back in rotation.
    pub async fn restart(&self, id: &str) -> Result<Deployment, FleetError> {
        let started = Instant::now();
        if !lock(&self.inner.plan).iter().any(|s| s.id.as_ref() == id) {
            return Err(FleetError::UnknownServer(id.into()));
        }
        let status = lock(&self.inner.servers)
            .get(id)
            .map(|m| Arc::clone(&m.status))
            .ok_or_else(|| FleetError::NotDeployed(id.into()))?;
        let before = lock(&status).up_since;
        self.want(id, Want::Restart);
        let settings = self.inner.settings();
        let deadline =
            Instant::now() + settings.drain_timeout + settings.stop_grace + settings.ready_timeout;
        loop {
            let (state, up_since, error) = {
                let st = lock(&status);
                (st.state, st.up_since, st.last_error.clone())
            };
            if state == ServerState::Running && up_since != before {
                break;
            }
            if state == ServerState::Failed || Instant::now() > deadline {
                return Err(FleetError::NotReady {
                    id: id.into(),
                    why: error.unwrap_or_else(|| format!("{state:?}")),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(self.record(Deployment {
            requested: 1,
            deployed: vec![id.into()],
            ..Deployment::new("restart", started, "ok")
        }))
    }

    /// Stops and forgets `ids` (after their drain), and records that they are no longer meant
    /// to run.
    pub async fn stop_ids(&self, ids: &[Arc<str>]) {
        let tasks: Vec<_> = {
            let mut servers = lock(&self.inner.servers);
            ids.iter()
                .filter_map(|id| servers.remove(id))
                .map(|m| {
                    m.desired.send_modify(|d| {
                        d.want = Want::Stop;
                        d.generation += 1;
                    });
                    m.task
                })
                .collect()
        };
        for t in tasks {
            let _ = t.await;
        }
        self.save();
    }

    /// Replaces the plan after a reload and says which servers it adds, removes and changes.
    pub fn replan(&self, config: &ValidConfig) -> Result<PlanDiff, FleetError> {
        let new = plan(config)?;
        *lock(&self.inner.settings) = FleetSettings::from_config(config);
        let mut old = lock(&self.inner.plan);
        let servers = lock(&self.inner.servers);
        let same = |a: &ServerSpec, b: &ServerSpec| {
            a.addr == b.addr
                && a.launch.program == b.launch.program
                && a.launch.args == b.launch.args
                && a.launch.cwd == b.launch.cwd
                && a.launch.env == b.launch.env
        };
        let added: Vec<Arc<str>> = new
            .iter()
            .filter(|n| !old.iter().any(|o| o.id == n.id))
            .map(|n| Arc::clone(&n.id))
            .collect();
        let removed: Vec<Arc<str>> = old
            .iter()
            .filter(|o| !new.iter().any(|n| n.id == o.id))
            .map(|o| Arc::clone(&o.id))
            .collect();
        let changed: Vec<Arc<str>> = old
            .iter()
            .filter(|o| new.iter().any(|n| n.id == o.id && !same(o, n)))
            .filter(|o| servers.contains_key(&o.id))
            .map(|o| Arc::clone(&o.id))
            .collect();
        // Running servers keep the spec they were started with until they are replaced.
        drop(servers);
        *old = new;
        Ok(PlanDiff {
            added,
            removed,
            changed,
        })
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

    /// Every planned server with its live state (`GET /servers`).
    pub fn servers(&self) -> Vec<ServerInfo> {
        let plan = lock(&self.inner.plan).clone();
        let servers = lock(&self.inner.servers);
        plan.iter()
            .enumerate()
            .filter_map(|(index, s)| {
                let m = servers.get(&s.id)?;
                let st = lock(&m.status);
                Some(ServerInfo {
                    id: s.id.to_string(),
                    index,
                    category: s.category.to_string(),
                    port: m.spec.addr.port(),
                    pid: st.pid,
                    state: st.state,
                    uptime_s: st.up_since.map(|t| t.elapsed().as_secs()),
                    restarts: st.restarts,
                    rss_bytes: st.pid.and_then(rss_bytes),
                    last_error: st.last_error.clone(),
                })
            })
            .collect()
    }

    /// How many servers the config describes.
    pub fn planned(&self) -> usize {
        lock(&self.inner.plan).len()
    }

    pub fn deployments(&self) -> Vec<Deployment> {
        lock(&self.inner.history).iter().cloned().collect()
    }

    /// Adds a history entry (reloads are recorded here too) and returns it with its number.
    pub fn record(&self, mut d: Deployment) -> Deployment {
        d.seq = self.inner.seq.fetch_add(1, Ordering::AcqRel) as u64 + 1;
        let mut h = lock(&self.inner.history);
        h.push_back(d.clone());
        while h.len() > HISTORY {
            h.pop_front();
        }
        d
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

    /// Running servers with their memory policy, for the memory watcher. The policy comes from
    /// the current plan, so a reload that changes `max_memory_mb` or `memory_action` applies to
    /// the watcher at once (the kernel limit follows at the server's next start).
    pub fn memory_targets(&self) -> Vec<MemoryTarget> {
        let policy: std::collections::HashMap<Arc<str>, (u64, crate::config::MemoryAction)> =
            lock(&self.inner.plan)
                .iter()
                .map(|s| (Arc::clone(&s.id), (s.memory_limit, s.memory_action)))
                .collect();
        lock(&self.inner.servers)
            .values()
            .filter_map(|m| {
                let st = lock(&m.status);
                let pid = st.pid.filter(|_| st.state == ServerState::Running)?;
                let (limit, action) = policy
                    .get(&m.spec.id)
                    .copied()
                    .unwrap_or((m.spec.memory_limit, m.spec.memory_action));
                Some(MemoryTarget {
                    id: Arc::clone(&m.spec.id),
                    category: Arc::clone(&m.spec.category),
                    pid,
                    limit,
                    action,
                })
            })
            .collect()
    }

    /// The memory policy acts on `id`: restart it (drain first) or only record the alert.
    pub fn memory_action(&self, target: &MemoryTarget, bytes: u64) {
        let action = match target.action {
            crate::config::MemoryAction::Restart => {
                self.want(&target.id, Want::Restart);
                "restart"
            }
            crate::config::MemoryAction::Alert => "alert",
        };
        tracing::warn!(
            server = %target.id,
            rss_mb = bytes >> 20,
            limit_mb = target.limit >> 20,
            action,
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

    pub fn memory_layer(&self) -> MemoryLayer {
        self.inner.cgroups.layer
    }

    pub fn memory_events(&self) -> Vec<MemoryEvent> {
        lock(&self.inner.memory_events).iter().cloned().collect()
    }

    /// OOM kills per server id (only servers that had one).
    pub fn oom_kills(&self) -> BTreeMap<String, u32> {
        lock(&self.inner.servers)
            .iter()
            .filter_map(|(id, m)| {
                let n = lock(&m.status).oom_kills;
                (n > 0).then(|| (id.to_string(), n))
            })
            .collect()
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
    }
}

/// (MemTotal, MemAvailable) in bytes.
pub fn meminfo() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map(|kb| kb * 1024)
    };
    Some((field("MemTotal:")?, field("MemAvailable:")?))
}

fn supervisor_state(status: &SharedStatus) -> ServerState {
    lock(status).state
}
