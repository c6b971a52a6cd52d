//! `mcp-fleet serve`: wires config, registry, health checker, fleet, reload, admin API and proxy
//! together and owns the process lifecycle (signals, graceful drain, stopping children).
//!
//! Threads: Pingora's (the proxy), `health` (active checks), and `control`, a single-threaded
//! runtime that runs the fleet's supervisors, the admin API, the monitor endpoint and reloads.
//! Children are forked from `control`, which lives as long as the process.

use crate::admin::{token, AdminApi};
use crate::config::ValidConfig;
use crate::health::HealthChecker;
use crate::plugins::fleet::{Fleet, FleetError};
use crate::plugins::monitor::Monitor;
use crate::proxy::fast_path::FastPath;
use crate::proxy::gate::Gate;
use crate::proxy::{FleetProxy, Traffic};
use crate::reload::Reloader;
use crate::secret_file::SecretError;
use crate::upstream::Registry;
use async_trait::async_trait;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora::services::listening::Service;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::signal::unix::{signal, Signal, SignalKind};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot create {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("session key: {0}")]
    Key(#[from] SecretError),
    #[error("admin token: {0}")]
    Token(#[from] token::TokenError),
    #[error("{key} {addr} is not available: {source}")]
    Listen {
        key: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Fleet(#[from] FleetError),
    #[error(transparent)]
    Tls(#[from] crate::proxy::tls::TlsError),
    #[error("cannot start the {what}: {source}")]
    Thread {
        what: &'static str,
        source: std::io::Error,
    },
}

/// File name of the session-affinity key inside the state dir.
/// The running instance's pid, for `mcp-fleet reload`.
pub const PID_FILE: &str = "mcp-fleet.pid";

fn bind(key: &'static str, addr: SocketAddr) -> Result<std::net::TcpListener, ServeError> {
    let listener = std::net::TcpListener::bind(addr)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|source| ServeError::Listen { key, addr, source })?;
    Ok(listener)
}

/// The control thread and how to stop it.
struct ControlPlane {
    stop: tokio::sync::watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ControlPlane {
    /// Stops every server (through the fleet) and waits for the thread.
    fn stop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct ControlParts {
    runtime: tokio::runtime::Runtime,
    hangup: Signal,
    fleet: Option<Fleet>,
    reloader: Arc<Reloader>,
    admin: Arc<AdminApi>,
    admin_listener: std::net::TcpListener,
    monitor_listener: std::net::TcpListener,
    monitor: Arc<Monitor>,
    registry: Arc<Registry>,
    config: tokio::sync::watch::Receiver<Arc<ValidConfig>>,
    auth: Arc<crate::auth::Authenticator>,
}

fn start_control(parts: ControlParts) -> Result<ControlPlane, ServeError> {
    let (stop, mut stop_rx) = tokio::sync::watch::channel(false);
    let ControlParts {
        runtime,
        mut hangup,
        fleet,
        reloader,
        admin,
        admin_listener,
        monitor_listener,
        monitor,
        registry,
        config,
        auth,
    } = parts;
    let thread = std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            runtime.block_on(async move {
                if let Some(f) = fleet.clone() {
                    tokio::spawn(async move {
                        f.start().await;
                        f.started();
                    });
                }
                if let Some(f) = fleet.clone() {
                    tokio::spawn(crate::plugins::memory::watch(f));
                }
                tokio::spawn(crate::upstream::discovery::run(registry, config));
                tokio::spawn(auth.run_refresher());
                match tokio::net::TcpListener::from_std(admin_listener) {
                    Ok(l) => {
                        tokio::spawn(Arc::clone(&admin).serve(l));
                    }
                    Err(e) => tracing::error!(error = %e, "admin API not served"),
                }
                match tokio::net::TcpListener::from_std(monitor_listener) {
                    Ok(l) => {
                        tokio::spawn(Arc::clone(&monitor).serve(l));
                        tokio::spawn(Arc::clone(&monitor).run());
                    }
                    Err(e) => tracing::error!(error = %e, "monitor endpoint not served"),
                }
                loop {
                    tokio::select! {
                        _ = hangup.recv() => {
                            tracing::info!("SIGHUP: reloading the configuration");
                            let r = Arc::clone(&reloader);
                            tokio::spawn(async move {
                                // Errors and results are logged by the reloader itself.
                                let _ = r.reload().await;
                            });
                        }
                        _ = stop_rx.changed() => break,
                    }
                }
                if let Some(f) = fleet {
                    f.shutdown().await;
                }
            });
        })
        .map_err(|source| ServeError::Thread {
            what: "control thread",
            source,
        })?;
    Ok(ControlPlane {
        stop,
        thread: Some(thread),
    })
}

/// Every client connection costs a descriptor and, proxied, an upstream one; the soft limit
/// (often 1024) would refuse connections long before `proxy.max_connections`, so take the hard
/// limit, as nginx's `worker_rlimit_nofile` does, and say when even that is short.
fn raise_fd_limit(config: &ValidConfig) {
    let Some(open_files) = crate::sys::raise_open_files() else {
        return;
    };
    let servers: usize = config
        .categories
        .iter()
        .map(|c| c.servers as usize + c.static_backends.len())
        .sum();
    let wanted = 2 * config.proxy.max_connections + servers + 256;
    if (open_files as usize) < wanted {
        tracing::warn!(
            open_files,
            wanted,
            "the open-file limit is below 2 x proxy.max_connections + servers; connections beyond it fail to be accepted (raise `ulimit -n` or lower proxy.max_connections)"
        );
    }
}

/// Runs until SIGTERM/SIGINT, then drains and stops every child. Returns only on a start error;
/// a finished run exits the process with status 0.
pub fn run(config: ValidConfig) -> Result<(), ServeError> {
    // SIGHUP's default action kills the process: claim it before anything else.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| ServeError::Thread {
            what: "control runtime",
            source,
        })?;
    let hangup = {
        let _enter = runtime.enter();
        signal(SignalKind::hangup()).map_err(|source| ServeError::Thread {
            what: "SIGHUP handler",
            source,
        })?
    };

    raise_fd_limit(&config);
    for dir in [&config.fleet.state_dir, &config.fleet.log_dir] {
        std::fs::create_dir_all(dir).map_err(|source| ServeError::Dir {
            path: dir.clone(),
            source,
        })?;
    }
    let codec: crate::proxy::session::SharedCodec = Arc::new(arc_swap::ArcSwap::from_pointee(
        crate::session_keys::load(&config.session)?,
    ));
    let edge: crate::proxy::policy::SharedEdge = Arc::new(crate::proxy::policy::Edge::new(&config));
    // The certificate is checked before anything starts: a bad pair fails `serve` at once.
    let certs = match &config.proxy.tls {
        Some(tls) => Some(Arc::new(crate::proxy::tls::Certs::new(
            crate::proxy::tls::load_pair(tls)?,
        ))),
        None => None,
    };
    let admin_token = token::for_server(&config)?;
    // Fail before spawning a thousand children if a port is taken.
    drop(bind("proxy.listen", config.proxy.listen)?);
    let admin_listener = bind("admin.listen", config.admin_listen)?;
    let monitor_listener = bind("monitor.listen", config.monitor_listen)?;
    let pid_file = config.fleet.state_dir.join(PID_FILE);
    if let Err(e) = std::fs::write(&pid_file, format!("{}\n", std::process::id())) {
        tracing::warn!(error = %e, path = %pid_file.display(), "cannot write the pid file; `mcp-fleet reload` will not find this instance");
    }

    // The fleet's plan is the one source of spawned membership: the registry publishes it.
    let plan = if config.fleet.enabled {
        crate::plugins::fleet::plan(&config)?
    } else {
        Vec::new()
    };
    let registry = Arc::new(Registry::new(
        &config,
        &crate::plugins::fleet::members(&plan),
    ));
    let traffic = Arc::new(Traffic::default());
    let health =
        HealthChecker::start(Arc::clone(&registry)).map_err(|source| ServeError::Thread {
            what: "health checker",
            source,
        })?;
    let history = Arc::new(crate::history::History::default());
    let fleet = config
        .fleet
        .enabled
        .then(|| Fleet::new(&config, plan, Arc::clone(&registry), Arc::clone(&history)));
    registry.set_label(
        "memory_enforcement",
        fleet
            .as_ref()
            .map_or("none (no fleet)", |f| f.memory_layer().name()),
    );
    let (current, current_rx) = tokio::sync::watch::channel(Arc::new(config.clone()));
    let mut rereads: Vec<Box<dyn crate::reload::Reread>> = vec![
        Box::new(crate::session_keys::SessionKeys(Arc::clone(&codec))),
        Box::new(crate::proxy::policy::access::EdgeReload(Arc::clone(&edge))),
    ];
    if let Some(c) = &certs {
        rereads.push(Box::new(crate::proxy::tls::TlsReload(Arc::clone(c))));
    }
    let reloader = Arc::new(Reloader::new(
        config.source.clone(),
        current,
        Arc::clone(&registry),
        fleet.clone(),
        Arc::clone(&history),
        rereads,
    ));
    let admin = Arc::new(AdminApi {
        fleet: fleet.clone(),
        reloader: Arc::clone(&reloader),
        registry: Arc::clone(&registry),
        history: Arc::clone(&history),
        token: admin_token,
    });
    let monitor = Monitor::new(
        current_rx.clone(),
        Arc::clone(&registry),
        fleet.clone(),
        Arc::clone(&history),
    );
    let control = Arc::new(Mutex::new(Some(start_control(ControlParts {
        runtime,
        hangup,
        fleet,
        reloader,
        admin,
        admin_listener,
        monitor_listener,
        monitor,
        registry: Arc::clone(&registry),
        config: current_rx,
        auth: Arc::clone(&edge.auth),
    })?)));

    let mut conf = ServerConf {
        threads: config.proxy.threads,
        // Pingora's default keeps 128 idle upstream connections per thread: too few for 1000
        // backends, so most requests would pay a new TCP handshake. Pingora multiplies this by
        // the thread count into one process-wide pool; proxy.upstream_keepalive is that
        // process-wide figure, as it is for the fast path's pool.
        upstream_keepalive_pool_size: config
            .proxy
            .upstream_keepalive
            .div_ceil(config.proxy.threads.max(1)),
        // Pingora's cap on attempts; ours (proxy.max_retries, reloadable, at most 10) is
        // enforced per request in the proxy.
        max_retries: 11,
        // Pingora waits this long after SIGTERM (default 300 s); our drain watcher exits as
        // soon as in-flight requests finish, so this is only the upper bound.
        grace_period_seconds: Some(config.proxy.shutdown_grace.as_secs().max(1)),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    conf.pid_file = config
        .fleet
        .state_dir
        .join("pingora.pid")
        .to_string_lossy()
        .into_owned();
    conf.upgrade_sock = config
        .fleet
        .state_dir
        .join("pingora-upgrade.sock")
        .to_string_lossy()
        .into_owned();
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let fast = FastPath::new(Arc::clone(&registry), Arc::clone(&codec), Arc::clone(&edge));
    let proxy = FleetProxy::new(
        Arc::clone(&registry),
        codec,
        Arc::clone(&edge),
        Arc::clone(&traffic),
    );
    let tls = match certs {
        Some(c) => Some(crate::proxy::tls::acceptor(c)?),
        None => None,
    };
    let gate = Gate::new(
        pingora::proxy::http_proxy(&server.configuration, proxy),
        fast,
        Arc::clone(&registry),
        tls,
    );
    let mut service = Service::new("mcp-fleet proxy".to_string(), gate);
    service.add_listener(client_listener(&config));
    server.add_service(service);
    tracing::info!(
        listen = %config.proxy.listen,
        admin = %config.admin_listen,
        monitor = %config.monitor_listen,
        threads = config.proxy.threads,
        categories = config.categories.len(),
        "proxy serving /mcp/{{category}}"
    );

    let watch = TerminationWatch {
        traffic,
        registry: Arc::clone(&registry),
        control: Arc::clone(&control),
        grace: config.proxy.shutdown_grace,
        pid_file: pid_file.clone(),
    };
    server.run(RunArgs {
        shutdown_signal: Box::new(watch),
    });
    // Pingora's grace period ran out before the drain finished: stop anyway.
    tracing::info!("proxy stopped; stopping servers");
    stop_control(&control, &pid_file);
    drop(health);
    std::process::exit(0);
}

fn stop_control(control: &Mutex<Option<ControlPlane>>, pid_file: &std::path::Path) {
    let taken = control
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    if let Some(mut c) = taken {
        c.stop();
    }
    let _ = std::fs::remove_file(pid_file);
}

/// Pingora's shutdown hook. SIGTERM, SIGINT and SIGQUIT all mean a graceful stop here (there is
/// no binary-upgrade handover): listeners close, then a watcher exits the process as soon as
/// the last in-flight request is done, or when the grace runs out.
struct TerminationWatch {
    traffic: Arc<Traffic>,
    registry: Arc<Registry>,
    control: Arc<Mutex<Option<ControlPlane>>>,
    grace: Duration,
    pid_file: PathBuf,
}

#[async_trait]
impl ShutdownSignalWatch for TerminationWatch {
    async fn recv(&self) -> ShutdownSignal {
        let (Ok(mut term), Ok(mut int), Ok(mut quit)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::quit()),
        ) else {
            tracing::error!("cannot watch termination signals; stopping");
            return ShutdownSignal::GracefulTerminate;
        };
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
            _ = quit.recv() => "SIGQUIT",
        };
        tracing::info!(
            signal = name,
            in_flight = self.traffic.in_flight(),
            grace_ms = self.grace.as_millis() as u64,
            "stopping: no new connections; finishing in-flight requests"
        );
        self.traffic.start_draining();
        self.registry.set_stopping();
        let traffic = Arc::clone(&self.traffic);
        let control = Arc::clone(&self.control);
        let pid_file = self.pid_file.clone();
        let deadline = Instant::now() + self.grace;
        let spawned = std::thread::Builder::new()
            .name("drain".into())
            .spawn(move || {
                // Let the listeners close and requests already accepted reach the proxy before
                // trusting a zero count; then require two zero readings in a row.
                std::thread::sleep(Duration::from_millis(100));
                let mut zeros = 0;
                while Instant::now() < deadline && zeros < 2 {
                    zeros = if traffic.in_flight() == 0 {
                        zeros + 1
                    } else {
                        0
                    };
                    std::thread::sleep(Duration::from_millis(25));
                }
                tracing::info!(in_flight = traffic.in_flight(), "drained; stopping servers");
                stop_control(&control, &pid_file);
                tracing::info!("all servers stopped; exiting");
                std::process::exit(0);
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the drain watcher; waiting out the grace");
        }
        ShutdownSignal::GracefulTerminate
    }
}

/// The client listener. Without TLS the gate and the engines read into their own buffers, so
/// Pingora's 64 KiB read buffer per connection would only add a copy of every byte and 64 KiB
/// to every open connection (an idle event stream's memory, mostly); it is left out. rustls
/// reads records in small pieces, which that buffer serves from memory: kept with TLS.
fn client_listener(config: &ValidConfig) -> pingora::listeners::ListenerConfig {
    use pingora::listeners::{L4BufferSettings, ListenerConfig};
    let listener = ListenerConfig::tcp(config.proxy.listen.to_string());
    if config.proxy.tls.is_some() {
        listener
    } else {
        listener.l4_buffer(L4BufferSettings::default().read(0))
    }
}
