//! `mcp-fleet serve`: wires config, registry, fleet and proxy together and owns the process
//! lifecycle (signals, graceful drain, stopping children).

use crate::config::ValidConfig;
use crate::health::HealthChecker;
use crate::plugins::fleet::{Fleet, FleetError};
use crate::proxy::session::SessionCodec;
use crate::proxy::{FleetProxy, ProxySettings, Traffic};
use crate::secret_file::{self, SecretError};
use crate::upstream::Registry;
use async_trait::async_trait;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::signal::unix::{signal, SignalKind};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot create {path}: {source}")]
    Dir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("session key: {0}")]
    Key(#[from] SecretError),
    #[error("proxy.listen {addr} is not available: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Fleet(#[from] FleetError),
    #[error("cannot start the health checker: {0}")]
    Health(std::io::Error),
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

/// File name of the session-affinity key inside the state dir.
pub const SESSION_KEY_FILE: &str = "session.key";

/// Runs until SIGTERM/SIGINT, then drains and stops every child. Returns only on a start error;
/// a finished run exits the process with status 0.
pub fn run(config: ValidConfig) -> Result<(), ServeError> {
    // SIGHUP's default action kills the process; claim it before anything else can be hit by it.
    let sighup_guard = ignore_sighup_until_reload_lands()?;

    for dir in [&config.fleet.state_dir, &config.fleet.log_dir] {
        std::fs::create_dir_all(dir).map_err(|source| ServeError::Dir {
            path: dir.clone(),
            source,
        })?;
    }
    let key: [u8; 32] =
        secret_file::load_or_create(&config.fleet.state_dir.join(SESSION_KEY_FILE))?;
    // Fail before spawning 1000 children if the proxy port is taken.
    std::net::TcpListener::bind(config.proxy.listen).map_err(|source| ServeError::Listen {
        addr: config.proxy.listen,
        source,
    })?;

    let registry = Arc::new(Registry::new(&config));
    let traffic = Arc::new(Traffic::default());
    let _health = if config.health.enabled {
        Some(
            HealthChecker::start(config.health.clone(), Arc::clone(&registry))
                .map_err(ServeError::Health)?,
        )
    } else {
        None
    };
    let fleet = Arc::new(Mutex::new(if config.fleet.enabled {
        Some(Fleet::start(&config, Arc::clone(&registry))?)
    } else {
        None
    }));

    let mut conf = ServerConf {
        threads: config.proxy.threads,
        // Pingora's default keeps 128 idle upstream connections per thread: too few for 1000
        // backends, so most requests would pay a new TCP handshake.
        upstream_keepalive_pool_size: config.proxy.upstream_keepalive,
        // Pingora counts the first attempt as one of its "retries".
        max_retries: config.proxy.max_retries + 1,
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
    let proxy = FleetProxy::new(
        Arc::clone(&registry),
        SessionCodec::new(&key),
        ProxySettings::from_config(&config.proxy),
        Arc::clone(&traffic),
    );
    let mut service = pingora::proxy::http_proxy_service(&server.configuration, proxy);
    service.add_tcp(&config.proxy.listen.to_string());
    server.add_service(service);
    tracing::info!(
        listen = %config.proxy.listen,
        threads = config.proxy.threads,
        strategy = config.proxy.strategy.name(),
        categories = config.categories.len(),
        "proxy serving /mcp/{{category}}"
    );

    let watch = TerminationWatch {
        traffic,
        fleet: Arc::clone(&fleet),
        grace: config.proxy.shutdown_grace,
    };
    server.run(RunArgs {
        shutdown_signal: Box::new(watch),
    });
    // Pingora's grace period ran out before the drain finished: stop anyway.
    tracing::info!("proxy stopped; stopping servers");
    stop_fleet(&fleet);
    drop(sighup_guard);
    std::process::exit(0);
}

fn stop_fleet(fleet: &Mutex<Option<Fleet>>) {
    let taken = fleet
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    if let Some(mut fleet) = taken {
        fleet.stop();
    }
}

/// Keeps SIGHUP from killing the process. Configuration reload (the real SIGHUP action) is not
/// part of this build; until it is, SIGHUP is logged and otherwise has no effect.
fn ignore_sighup_until_reload_lands() -> Result<std::thread::JoinHandle<()>, ServeError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(ServeError::Signals)?;
    let mut hup = {
        let _enter = runtime.enter();
        signal(SignalKind::hangup()).map_err(ServeError::Signals)?
    };
    std::thread::Builder::new()
        .name("sighup".into())
        .spawn(move || {
            runtime.block_on(async move {
                while hup.recv().await.is_some() {
                    tracing::warn!(
                        "SIGHUP received: configuration reload is not available in this version; \
                         restart `mcp-fleet serve` to apply config changes"
                    );
                }
            })
        })
        .map_err(ServeError::Signals)
}

/// Pingora's shutdown hook. SIGTERM, SIGINT and SIGQUIT all mean a graceful stop here (there is
/// no binary-upgrade handover): listeners close, then a watcher exits the process as soon as
/// the last in-flight request is done, or when the grace runs out.
struct TerminationWatch {
    traffic: Arc<Traffic>,
    fleet: Arc<Mutex<Option<Fleet>>>,
    grace: Duration,
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
        let traffic = Arc::clone(&self.traffic);
        let fleet = Arc::clone(&self.fleet);
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
                stop_fleet(&fleet);
                tracing::info!("all servers stopped; exiting");
                std::process::exit(0);
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the drain watcher; waiting out the grace");
        }
        ShutdownSignal::GracefulTerminate
    }
}
