//! The fleet plugin: spawns every configured server in batches, waits for each batch to accept
//! connections before starting the next, publishes ready servers into the upstream registry, and
//! restarts servers that exit, with back-off.
//!
//! All of it runs on one dedicated thread with its own single-threaded runtime. Children are
//! forked from that thread, which lives as long as the process, so `PR_SET_PDEATHSIG` fires only
//! when the whole process dies. The fleet knows nothing of HTTP routing.

mod child;
mod plan;
mod ports;

pub use plan::{plan, ServerSpec};

use crate::config::ValidConfig;
use crate::upstream::Registry;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};

/// First restart delay; doubles per consecutive failure up to `MAX_BACKOFF`.
const MIN_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A server that stayed up this long has its back-off reset.
const STABLE_AFTER: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("cannot start the fleet thread: {0}")]
    Thread(std::io::Error),
    #[error("cannot build the fleet runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot resolve command {program:?}: {source}")]
    Program {
        program: String,
        source: std::io::Error,
    },
}

/// Handle to the running fleet thread.
pub struct Fleet {
    shutdown: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

/// How a server's first start ended, reported to the batch deployer.
/// Ready servers against the planned total, so a server that comes up late (after retries) can
/// tell the operator when the whole fleet is finally serving.
#[derive(Debug)]
struct Census {
    ready: AtomicUsize,
    total: usize,
}

impl Census {
    fn up(&self, id: &str) {
        let now = self.ready.fetch_add(1, Ordering::AcqRel) + 1;
        tracing::debug!(server = id, ready = now, total = self.total, "server ready");
        if now == self.total {
            tracing::info!(total = self.total, "all servers ready");
        }
    }

    fn down(&self) {
        self.ready.fetch_sub(1, Ordering::AcqRel);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FirstStart {
    Ready,
    Failed,
}

impl Fleet {
    /// Starts the fleet thread; deployment proceeds in the background while the proxy serves.
    pub fn start(config: &ValidConfig, registry: Arc<Registry>) -> Result<Self, FleetError> {
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
        let (shutdown, shutdown_rx) = watch::channel(false);
        let batch_size = config.fleet.batch_size;
        let ready_timeout = config.fleet.ready_timeout;
        let stop_grace = config.fleet.stop_grace;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(FleetError::Runtime)?;
        let thread = std::thread::Builder::new()
            .name("fleet".into())
            .spawn(move || {
                runtime.block_on(deploy_and_supervise(
                    specs,
                    batch_size,
                    ready_timeout,
                    stop_grace,
                    registry,
                    shutdown_rx,
                ));
            })
            .map_err(FleetError::Thread)?;
        Ok(Self {
            shutdown,
            thread: Some(thread),
        })
    }

    /// Stops every server (SIGTERM, then SIGKILL after the grace) and waits for the thread.
    pub fn stop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn deploy_and_supervise(
    specs: Vec<ServerSpec>,
    batch_size: usize,
    ready_timeout: Duration,
    stop_grace: Duration,
    registry: Arc<Registry>,
    shutdown: watch::Receiver<bool>,
) {
    let started = Instant::now();
    let total = specs.len();
    // (category, ready, total) in deployment order, which is config order.
    let mut per_category: Vec<(Arc<str>, usize, usize)> = Vec::new();
    for s in &specs {
        match per_category.last_mut() {
            Some(last) if last.0 == s.category => last.2 += 1,
            _ => per_category.push((Arc::clone(&s.category), 0, 1)),
        }
    }
    tracing::info!(servers = total, batch_size, "deploying the fleet");
    let census = Arc::new(Census {
        ready: AtomicUsize::new(0),
        total,
    });
    let mut tasks = Vec::with_capacity(total);
    let mut ready = 0usize;
    for (batch_no, batch) in specs.chunks(batch_size.max(1)).enumerate() {
        if *shutdown.borrow() {
            break;
        }
        let mut outcomes = Vec::with_capacity(batch.len());
        for spec in batch {
            let (tx, rx) = oneshot::channel();
            outcomes.push((Arc::clone(&spec.category), rx));
            tasks.push(tokio::spawn(supervise(
                spec.clone(),
                ready_timeout,
                stop_grace,
                Arc::clone(&registry),
                Arc::clone(&census),
                shutdown.clone(),
                tx,
            )));
        }
        let mut failed = 0;
        for (category, rx) in outcomes {
            match rx.await {
                Ok(FirstStart::Ready) => {
                    ready += 1;
                    if let Some(c) = per_category.iter_mut().find(|c| c.0 == category) {
                        c.1 += 1;
                    }
                }
                Ok(FirstStart::Failed) | Err(_) => failed += 1,
            }
        }
        let by_category = per_category
            .iter()
            .map(|(name, r, t)| format!("{name} {r}/{t}"))
            .collect::<Vec<_>>()
            .join(", ");
        tracing::info!(
            batch = batch_no + 1,
            ready,
            total,
            failed_in_batch = failed,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "deployment: {ready}/{total} ready ({by_category})"
        );
    }
    if ready == total {
        tracing::info!(
            total,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "fleet deployed"
        );
    } else if !*shutdown.borrow() {
        tracing::warn!(
            ready,
            total,
            "fleet deployed with servers not ready; they are being retried"
        );
    }
    for task in tasks {
        let _ = task.await;
    }
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

/// Keeps one server running until shutdown.
async fn supervise(
    spec: ServerSpec,
    ready_timeout: Duration,
    stop_grace: Duration,
    registry: Arc<Registry>,
    census: Arc<Census>,
    mut shutdown: watch::Receiver<bool>,
    first: oneshot::Sender<FirstStart>,
) {
    let mut first = Some(first);
    let mut backoff = MIN_BACKOFF;
    let report = |first: &mut Option<oneshot::Sender<FirstStart>>, outcome| {
        if let Some(tx) = first.take() {
            let _ = tx.send(outcome);
        }
    };
    while !*shutdown.borrow() {
        if let Err(e) = port_is_free(spec.addr) {
            tracing::error!(
                server = %spec.id,
                port = spec.addr.port(),
                error = %e,
                "port is in use by another process; retrying after {backoff:?}"
            );
            report(&mut first, FirstStart::Failed);
            if sleep_or_shutdown(backoff, &mut shutdown).await {
                break;
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
            continue;
        }
        let mut child = match child::spawn(&spec.launch) {
            Ok(child) => child,
            Err(e) => {
                tracing::error!(server = %spec.id, port = spec.addr.port(), error = %e, "cannot start server");
                report(&mut first, FirstStart::Failed);
                if sleep_or_shutdown(backoff, &mut shutdown).await {
                    break;
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        let up_since = Instant::now();
        let outcome = tokio::select! {
            r = wait_ready(&spec, &mut child, ready_timeout) => r,
            _ = shutdown.changed() => Err("shutting down".to_string()),
        };
        match outcome {
            Ok(()) => {
                registry.set_ready(&[(spec.addr, true)]);
                report(&mut first, FirstStart::Ready);
                census.up(&spec.id);
                tokio::select! {
                    status = child.wait() => {
                        registry.set_ready(&[(spec.addr, false)]);
                        census.down();
                        let status = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                        tracing::warn!(server = %spec.id, port = spec.addr.port(), %status, "server exited; restarting after back-off");
                    }
                    _ = shutdown.changed() => {
                        registry.set_ready(&[(spec.addr, false)]);
                        census.down();
                        child::stop(&mut child, stop_grace).await;
                        break;
                    }
                }
            }
            Err(why) => {
                if *shutdown.borrow() {
                    child::stop(&mut child, stop_grace).await;
                    break;
                }
                tracing::error!(
                    server = %spec.id,
                    port = spec.addr.port(),
                    log = %spec.launch.log_file.display(),
                    "server failed to start: {why}; retrying after {backoff:?}"
                );
                report(&mut first, FirstStart::Failed);
                child::stop(&mut child, stop_grace).await;
            }
        }
        if up_since.elapsed() >= STABLE_AFTER {
            backoff = MIN_BACKOFF;
        }
        if sleep_or_shutdown(backoff, &mut shutdown).await {
            break;
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Sleeps, waking early on shutdown; true when shutting down.
async fn sleep_or_shutdown(pause: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(pause) => *shutdown.borrow(),
        _ = shutdown.changed() => true,
    }
}
