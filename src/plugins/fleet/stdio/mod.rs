//! The stdio bridge: a server whose program speaks MCP over stdin and stdout (most published
//! servers) is served on its address as Streamable HTTP by this process, so the proxy balances
//! over it like any server. Bridges run on their own runtime (two worker threads made once and
//! never ended), not on the control thread: a burst of sessions forks a child each, and the
//! supervisors, the admin API and the bridges' health answers must not wait behind that. Its
//! workers live as long as the process, so `PR_SET_PDEATHSIG` of the children they fork fires
//! only when the process dies (a blocking-pool thread would not do: those exit when idle). Each
//! child is in its own process group and cgroup with the category's memory limit.
//!
//! Rooms: `message` (JSON-RPC as the bridge handles it), `link` (one child and the channel to
//! it), `bridge` (children, limits), `route` (where what children send goes), `session` (one
//! session and its queue), `http` (the
//! Streamable HTTP side), `stats` (what `/servers` shows). The supervisor calls `run` in place of
//! starting an HTTP server process.

mod bridge;
mod http;
mod link;
mod message;
mod route;
mod session;
mod stats;

use super::supervisor::{fail_start, FirstStart, RunEnd, SharedStatus, Want};
use super::{Inner, ServerSpec};
use crate::api::ServerState;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

pub use bridge::{Bridge, Limits};

/// How long a health check's `ping` of the shared child may take.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

fn bind(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Worker threads of the bridges' runtime.
const WORKERS: usize = 2;

/// The bridges' runtime, made at the first stdio server and kept for the life of the process.
fn runtime() -> std::io::Result<&'static tokio::runtime::Runtime> {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .thread_name("stdio-bridge")
        .enable_all()
        .build()?;
    Ok(RUNTIME.get_or_init(|| rt))
}

/// Runs one stdio server's bridge on the bridges' runtime until it is stopped or restarted
/// (what `run` does), for the supervisor on the control thread.
pub(super) async fn serve(
    spec: &ServerSpec,
    status: &SharedStatus,
    inner: &Arc<Inner>,
    settings: &super::FleetSettings,
    desired: &mut watch::Receiver<Desired>,
    shutdown: &mut watch::Receiver<bool>,
    first: &mut FirstStart,
) -> RunEnd {
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            return fail_start(
                status,
                format!("cannot start the bridge's threads: {e}"),
                first,
            )
        }
    };
    let (spec, status_c, inner, settings) = (
        spec.clone(),
        Arc::clone(status),
        Arc::clone(inner),
        settings.clone(),
    );
    let (mut desired_c, mut shutdown_c) = (desired.clone(), shutdown.clone());
    let mut first_c = first.take();
    let task = rt.spawn(async move {
        let end = run(
            &spec,
            &status_c,
            &inner,
            &settings,
            &mut desired_c,
            &mut shutdown_c,
            &mut first_c,
        )
        .await;
        (end, first_c)
    });
    let outcome = task.await;
    // The bridge saw the changes that ended it; the supervisor's receivers have seen them too.
    desired.borrow_and_update();
    shutdown.borrow_and_update();
    match outcome {
        Ok((end, back)) => {
            *first = back;
            end
        }
        Err(e) => fail_start(status, format!("the bridge stopped: {e}"), first),
    }
}

/// Serves one stdio server until it is stopped or restarted: listens on its address, starts
/// children as its sessions need them, reaps idle ones, and ends them all when it stops.
async fn run(
    spec: &ServerSpec,
    status: &SharedStatus,
    inner: &Arc<Inner>,
    settings: &super::FleetSettings,
    desired: &mut watch::Receiver<Desired>,
    shutdown: &mut watch::Receiver<bool>,
    first: &mut FirstStart,
) -> RunEnd {
    let Some(config) = inner.planned_stdio(&spec.id).or(spec.stdio) else {
        return fail_start(status, "not a stdio server".into(), first);
    };
    let listener = match bind(spec.addr) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(server = %spec.id, port = spec.addr.port(), error = %e, "cannot listen for the stdio bridge");
            return fail_start(
                status,
                format!("cannot listen on {}: {e}", spec.addr),
                first,
            );
        }
    };
    let launch = &spec.launch;
    let bridge = Bridge::new(
        config,
        bridge::Spawner {
            server: Arc::clone(&spec.id),
            launch: launch.clone(),
            memory_limit: spec.memory_limit,
            inner: Arc::clone(inner),
            log: super::logfile::Sink::new(
                launch.server_logs,
                launch.log_file.clone(),
                launch.log_max_size,
                launch.log_keep,
            ),
        },
    );
    bridge.warm().await;
    {
        let mut st = status.write();
        st.state = ServerState::Running;
        st.pid = None;
        st.up_since = Some(Instant::now());
        st.last_error = None;
        st.bridge = Some(Arc::clone(&bridge));
    }
    inner.registry.set_ready(&[(spec.addr, true)]);
    first.report(Ok(()));
    inner.census_up(&spec.id);
    tracing::debug!(server = %spec.id, addr = %spec.addr, isolation = ?config.isolation, "stdio bridge listening");
    let mcp_path: Arc<str> = spec.mcp_path.clone();
    let mut connections = tokio::task::JoinSet::new();
    // Reaping looks a quarter of the idle timeout apart (read each time: a reload changes it).
    let tick = |b: &Bridge| {
        (b.limits().idle_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(5))
    };
    let mut next_reap = Instant::now() + tick(&bridge);
    let generation = desired.borrow().generation;
    let end = loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let (bridge, path) = (Arc::clone(&bridge), Arc::clone(&mcp_path));
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        http::handle(Arc::clone(&bridge), Arc::clone(&path), PING_TIMEOUT, req)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = tokio::time::sleep_until(next_reap.into()) => {
                bridge.reap().await;
                next_reap = Instant::now() + tick(&bridge);
            }
            _ = shutdown.changed() => break RunEnd::Stop,
            changed = desired.changed() => {
                let d = *desired.borrow();
                if changed.is_err() || d.want == Want::Stop {
                    break RunEnd::Stop;
                }
                if d.want == Want::Restart && d.generation != generation {
                    super::supervisor::drain(spec, status, inner, settings).await;
                    break RunEnd::Restart;
                }
            }
        }
    };
    inner.registry.set_ready(&[(spec.addr, false)]);
    drop(listener);
    bridge.close().await;
    connections.abort_all();
    inner.census_down();
    let mut st = status.write();
    st.up_since = None;
    st.bridge = None;
    end
}

use super::supervisor::Desired;
