//! The life of one deployed server: start it, wait until it accepts connections, publish it,
//! restart it with back-off when it exits, give up (failed) after too many restarts in a window,
//! and obey the operator: stop, restart (drain first), retry after failure.

use super::child;
use super::{Inner, ServerSpec};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};

/// First restart delay; doubles per consecutive failure up to `MAX_BACKOFF`.
const MIN_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A server that stayed up this long has its back-off reset.
const STABLE_AFTER: Duration = Duration::from_secs(60);

pub use crate::api::ServerState;

/// What the operator wants of a server; each change bumps `generation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    Run,
    /// Drain, stop and start again (the admin API's restart).
    Restart,
    Stop,
}

#[derive(Debug, Clone, Copy)]
pub struct Desired {
    pub want: Want,
    pub generation: u64,
}

#[derive(Debug)]
pub struct Status {
    pub state: ServerState,
    pub pid: Option<u32>,
    pub up_since: Option<Instant>,
    /// Restarts after an exit (not operator restarts).
    pub restarts: u32,
    /// Exits that were the kernel's OOM killer (counted apart from crashes).
    pub oom_kills: u32,
    recent: VecDeque<Instant>,
    pub last_error: Option<String>,
    /// The memory watcher's last sample of this server (PSS), while it runs.
    pub memory: Option<u64>,
    /// A stdio server's bridge, while it runs.
    pub bridge: Option<Arc<super::stdio::Bridge>>,
}

impl Default for Status {
    fn default() -> Self {
        Self {
            state: ServerState::Starting,
            pid: None,
            up_since: None,
            restarts: 0,
            oom_kills: 0,
            recent: VecDeque::new(),
            last_error: None,
            memory: None,
            bridge: None,
        }
    }
}

/// A server's status with a change signal: the supervisor writes it, and whoever waits for a
/// server to come up or fail (a restart, a retry) waits on the signal instead of polling.
#[derive(Debug, Default)]
pub struct StatusCell {
    status: Mutex<Status>,
    changed: watch::Sender<u64>,
}

pub type SharedStatus = Arc<StatusCell>;

/// A write to a status; every waiter is woken when it ends.
pub struct StatusGuard<'a> {
    guard: std::sync::MutexGuard<'a, Status>,
    changed: &'a watch::Sender<u64>,
}

impl std::ops::Deref for StatusGuard<'_> {
    type Target = Status;
    fn deref(&self) -> &Status {
        &self.guard
    }
}

impl std::ops::DerefMut for StatusGuard<'_> {
    fn deref_mut(&mut self) -> &mut Status {
        &mut self.guard
    }
}

impl Drop for StatusGuard<'_> {
    fn drop(&mut self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }
}

impl StatusCell {
    /// For a change: waiters are woken when the guard drops.
    pub fn write(&self) -> StatusGuard<'_> {
        StatusGuard {
            guard: self.read(),
            changed: &self.changed,
        }
    }

    /// For a look (no wake-up). A panic while held leaves a status of plain fields, still usable.
    pub fn read(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits until `done` holds of the status, or `deadline`; returns whether it held.
    pub async fn wait_for(&self, deadline: Instant, mut done: impl FnMut(&Status) -> bool) -> bool {
        let mut changes = self.changed.subscribe();
        loop {
            if done(&self.read()) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero()
                || !matches!(
                    tokio::time::timeout(left, changes.changed()).await,
                    Ok(Ok(()))
                )
            {
                return done(&self.read());
            }
        }
    }
}

fn lock(status: &SharedStatus) -> StatusGuard<'_> {
    status.write()
}

/// Whether the server could bind its port now (with SO_REUSEADDR, as servers do, so the TIME_WAIT
/// leftovers of its previous life do not count). Without this check a readiness probe would be
/// answered by whichever process holds the port, and a server that failed to bind would pass.
fn port_is_free(addr: std::net::SocketAddr) -> std::io::Result<()> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)
}

/// Polls until the server accepts a TCP connection, it exits, or the deadline passes.
async fn wait_ready(
    spec: &ServerSpec,
    child: &mut tokio::process::Child,
    timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(10);
    loop {
        if let Ok(stream) = TcpStream::connect(spec.addr).await {
            // Reset instead of FIN: the probe leaves no TIME_WAIT entry behind.
            let _ = stream.set_zero_linger();
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "exited ({status}) while another process answered on its port"
                ));
            }
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("exited before accepting connections ({status})"));
        }
        if Instant::now() >= deadline {
            return Err(format!("not accepting connections after {timeout:?}"));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// An operator's restart: no new requests; wait for those in flight, bounded by the drain
/// timeout.
pub(super) async fn drain(
    spec: &ServerSpec,
    status: &SharedStatus,
    inner: &Inner,
    settings: &super::FleetSettings,
) {
    lock(status).state = ServerState::Draining;
    inner.registry.set_ready(&[(spec.addr, false)]);
    let deadline = Instant::now() + settings.drain_timeout;
    // One atomic of this server's live state, not a scan of the registry.
    if let Some(live) = inner.registry.live_state(spec.addr) {
        while live.in_flight() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Reports the first start's outcome to whoever deployed the server.
pub(super) struct FirstStart(Option<oneshot::Sender<Result<(), String>>>);

impl FirstStart {
    /// Hands the report over (to a task that runs the start elsewhere), leaving this one empty.
    pub(super) fn take(&mut self) -> Self {
        Self(self.0.take())
    }

    pub(super) fn report(&mut self, outcome: Result<(), String>) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(outcome);
        }
    }
}

/// Keeps one server as the operator wants it until told to stop (or the fleet shuts down).
pub async fn supervise(
    spec: ServerSpec,
    status: SharedStatus,
    mut desired: watch::Receiver<Desired>,
    inner: Arc<Inner>,
    first: oneshot::Sender<Result<(), String>>,
) {
    let mut first = FirstStart(Some(first));
    let mut backoff = MIN_BACKOFF;
    let mut shutdown = inner.shutdown.subscribe();
    let stop_now = |d: &watch::Receiver<Desired>, s: &watch::Receiver<bool>| {
        *s.borrow() || d.borrow().want == Want::Stop
    };
    loop {
        if stop_now(&desired, &shutdown) {
            break;
        }
        if lock(&status).state == ServerState::Failed {
            first.report(Err("failed".into()));
            // Only retry-failed (a new Run generation), a stop or shutdown moves a failed server.
            tokio::select! {
                _ = desired.changed() => {}
                _ = shutdown.changed() => {}
            }
            if stop_now(&desired, &shutdown) {
                break;
            }
            let mut st = lock(&status);
            st.recent.clear();
            st.state = ServerState::Starting;
            backoff = MIN_BACKOFF;
            continue;
        }
        let settings = inner.settings();
        let outcome = run_once(
            &spec,
            &status,
            &inner,
            &settings,
            &mut desired,
            &mut shutdown,
            &mut first,
        )
        .await;
        match outcome {
            RunEnd::Stop => break,
            RunEnd::Restart => {
                backoff = MIN_BACKOFF;
                continue;
            }
            RunEnd::Exited { stable } => {
                if stable {
                    backoff = MIN_BACKOFF;
                }
                let failed = {
                    let mut st = lock(&status);
                    let now = Instant::now();
                    st.recent.push_back(now);
                    while st
                        .recent
                        .front()
                        .is_some_and(|t| now.duration_since(*t) > settings.restart_window)
                    {
                        st.recent.pop_front();
                    }
                    st.restarts += 1;
                    if st.recent.len() as u32 > settings.max_restarts {
                        st.state = ServerState::Failed;
                        true
                    } else {
                        st.state = ServerState::Backoff;
                        false
                    }
                };
                if failed {
                    tracing::error!(
                        server = %spec.id,
                        port = spec.addr.port(),
                        max_restarts = settings.max_restarts,
                        window = ?settings.restart_window,
                        "server failed: too many restarts; left stopped until retry-failed"
                    );
                    continue;
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = desired.changed() => {}
                    _ = shutdown.changed() => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
    inner.registry.set_ready(&[(spec.addr, false)]);
    let mut st = lock(&status);
    st.state = ServerState::Stopped;
    st.pid = None;
    st.up_since = None;
    drop(st);
    first.report(Err("stopped before it was ready".into()));
}

pub(super) enum RunEnd {
    Stop,
    Restart,
    Exited { stable: bool },
}

/// A start that did not get as far as a ready server: recorded, reported to the deployer, and
/// treated like an exit (back-off, restart budget).
pub(super) fn fail_start(status: &SharedStatus, why: String, first: &mut FirstStart) -> RunEnd {
    let mut st = lock(status);
    st.last_error = Some(why.clone());
    st.pid = None;
    drop(st);
    first.report(Err(why));
    RunEnd::Exited { stable: false }
}

async fn run_once(
    spec: &ServerSpec,
    status: &SharedStatus,
    inner: &Arc<Inner>,
    settings: &super::FleetSettings,
    desired: &mut watch::Receiver<Desired>,
    shutdown: &mut watch::Receiver<bool>,
    first: &mut FirstStart,
) -> RunEnd {
    if spec.stdio.is_some() {
        return super::stdio::serve(spec, status, inner, settings, desired, shutdown, first).await;
    }
    if let Err(e) = port_is_free(spec.addr) {
        tracing::error!(server = %spec.id, port = spec.addr.port(), error = %e, "port is in use by another process");
        return fail_start(
            status,
            format!("port {} is in use: {e}", spec.addr.port()),
            first,
        );
    }
    let cg = inner.cgroups.prepare(&spec.id, spec.memory_limit);
    let oom_before = cg.oom_kills();
    let end = run_child(
        spec, status, inner, settings, desired, shutdown, first, &cg, oom_before,
    )
    .await;
    // Whatever the child left in its cgroup goes with it (a helper that changed its group).
    cg.kill_all();
    cg.remove();
    end
}

#[allow(clippy::too_many_arguments)]
async fn run_child(
    spec: &ServerSpec,
    status: &SharedStatus,
    inner: &Arc<Inner>,
    settings: &super::FleetSettings,
    desired: &mut watch::Receiver<Desired>,
    shutdown: &mut watch::Receiver<bool>,
    first: &mut FirstStart,
    cg: &super::cgroup::ServerCgroup,
    oom_before: u64,
) -> RunEnd {
    let mut process = match child::spawn(&spec.launch, &cg.procs) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(server = %spec.id, port = spec.addr.port(), error = %e, "cannot start server");
            return fail_start(status, format!("cannot start: {e}"), first);
        }
    };
    {
        let mut st = lock(status);
        st.state = ServerState::Starting;
        st.pid = process.id();
    }
    let started = Instant::now();
    let ready = tokio::select! {
        r = wait_ready(spec, &mut process, settings.ready_timeout) => r,
        _ = desired.changed() => Err("interrupted".into()),
        _ = shutdown.changed() => Err("interrupted".into()),
    };
    if let Err(why) = ready {
        child::stop(&mut process, settings.stop_grace).await;
        if *shutdown.borrow() || desired.borrow().want == Want::Stop {
            return RunEnd::Stop;
        }
        if desired.borrow().want == Want::Restart {
            return RunEnd::Restart;
        }
        tracing::error!(server = %spec.id, port = spec.addr.port(), log = %spec.launch.log_file.display(), "server failed to start: {why}");
        return fail_start(status, why, first);
    }
    inner.registry.set_ready(&[(spec.addr, true)]);
    {
        let mut st = lock(status);
        st.state = ServerState::Running;
        st.up_since = Some(Instant::now());
        st.last_error = None;
    }
    first.report(Ok(()));
    inner.census_up(&spec.id);
    let generation = desired.borrow().generation;
    let end = loop {
        tokio::select! {
            exit = process.wait() => {
                inner.registry.set_ready(&[(spec.addr, false)]);
                if let Some(pid) = lock(status).pid {
                    child::kill_group(pid);
                }
                let exit = exit.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                if cg.oom_kills() > oom_before {
                    tracing::warn!(server = %spec.id, port = spec.addr.port(), limit_mb = spec.memory_limit >> 20, "server killed by the kernel's OOM killer at its memory limit");
                    let mut st = lock(status);
                    st.oom_kills += 1;
                    st.last_error = Some(format!("OOM-killed at its {} MiB limit", spec.memory_limit >> 20));
                    drop(st);
                    inner.memory_event(crate::api::MemoryEvent {
                        at: crate::upstream::clock::unix_now(),
                        id: spec.id.to_string(),
                        action: crate::api::MemoryActionTaken::OomKill,
                        bytes: None,
                        limit: spec.memory_limit,
                    });
                } else {
                    tracing::warn!(server = %spec.id, port = spec.addr.port(), status = %exit, "server exited");
                    lock(status).last_error = Some(format!("exited: {exit}"));
                }
                break RunEnd::Exited { stable: started.elapsed() >= STABLE_AFTER };
            }
            _ = shutdown.changed() => {
                inner.registry.set_ready(&[(spec.addr, false)]);
                child::stop(&mut process, settings.stop_grace).await;
                break RunEnd::Stop;
            }
            changed = desired.changed() => {
                let d = *desired.borrow();
                if changed.is_err() || d.want == Want::Stop {
                    lock(status).state = ServerState::Draining;
                    inner.registry.set_ready(&[(spec.addr, false)]);
                    child::stop(&mut process, settings.stop_grace).await;
                    break RunEnd::Stop;
                }
                if d.want == Want::Restart && d.generation != generation {
                    drain(spec, status, inner, settings).await;
                    child::stop(&mut process, settings.stop_grace).await;
                    break RunEnd::Restart;
                }
            }
        }
    };
    inner.census_down();
    let mut st = lock(status);
    st.pid = None;
    st.up_since = None;
    st.memory = None;
    end
}
