//! One bridged server's state: its sessions, its children (one per session, or one shared),
//! where a child's unasked messages go, and the limits (sessions per server, children in the
//! fleet, the memory budget) a new child must pass. The HTTP side (`http`) calls it; it never
//! sees HTTP.

use super::link::{Link, LinkError, Start};
use super::message::{self, Msg, Shape};
use super::session::{new_session_id, Session};
use super::stats::{Exit, Stats};
use crate::config::{Isolation, StartMode, StdioConfig};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

/// How long the bridge waits for a child to answer its own `initialize` (shared children).
const HANDSHAKE: Duration = Duration::from_secs(30);

/// Why a request cannot be served now: the HTTP side turns it into a status and a JSON-RPC error.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("this server holds its limit of {0} sessions; try again later")]
    Sessions(usize),
    #[error(
        "the fleet runs its limit of {0} stdio children (fleet.max_children); try again later"
    )]
    Children(usize),
    #[error("{0}")]
    Memory(String),
    #[error("cannot start the server: {0}")]
    Spawn(String),
    #[error("the server process exited before it answered")]
    Gone,
    #[error("the server is shutting down")]
    Closing,
}

impl From<LinkError> for Refusal {
    fn from(_: LinkError) -> Self {
        Self::Gone
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The shared child with what it answered the bridge's `initialize`.
struct Shared {
    link: Arc<Link>,
    init: Value,
}

/// What the bridge needs of the fleet to start a child.
pub struct Spawner {
    pub server: Arc<str>,
    pub launch: super::super::child::Launch,
    pub memory_limit: u64,
    pub inner: Arc<super::super::Inner>,
    pub log: super::super::logfile::Sink,
}

pub struct Bridge {
    /// As the server started; `max_sessions` and `idle_timeout` are read from `limits`, which
    /// a reload changes in place.
    pub config: StdioConfig,
    limits: Mutex<Limits>,
    pub stats: Arc<Stats>,
    pub(super) spawner: Spawner,
    pub(super) sessions: Mutex<HashMap<Arc<str>, Arc<Session>>>,
    shared: tokio::sync::Mutex<Option<Shared>>,
    /// A started child waiting for the next session (`start = "eager"`, session isolation).
    spare: Mutex<Option<Arc<Link>>>,
    next_child: AtomicU64,
    /// Sessions being opened (counted against `max_sessions` with those open).
    opening: AtomicUsize,
    closing: AtomicBool,
    pub(super) me: Weak<Bridge>,
}

/// What a reload changes in a running bridge without replacing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_sessions: usize,
    pub idle_timeout: Duration,
}

impl Limits {
    pub fn of(config: &StdioConfig) -> Self {
        Self {
            max_sessions: config.max_sessions,
            idle_timeout: config.idle_timeout,
        }
    }
}

/// Gives back the place an opening session took.
struct Opening<'a>(&'a AtomicUsize);

impl Drop for Opening<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridge")
            .field("server", &self.spawner.server)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Bridge {
    pub fn new(config: StdioConfig, spawner: Spawner) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            config,
            limits: Mutex::new(Limits::of(&config)),
            stats: Arc::new(Stats::default()),
            spawner,
            sessions: Mutex::default(),
            shared: tokio::sync::Mutex::new(None),
            spare: Mutex::new(None),
            next_child: AtomicU64::new(0),
            opening: AtomicUsize::new(0),
            closing: AtomicBool::new(false),
            me: me.clone(),
        })
    }

    pub fn limits(&self) -> Limits {
        *lock(&self.limits)
    }

    /// A reload's new `max_sessions` and `idle_timeout`: taken at once; sessions open beyond a
    /// lowered limit are kept (new ones wait for places).
    pub fn set_limits(&self, limits: Limits) {
        *lock(&self.limits) = limits;
    }

    pub fn session(&self, id: &str) -> Option<Arc<Session>> {
        lock(&self.sessions).get(id).cloned()
    }

    pub fn session_count(&self) -> usize {
        lock(&self.sessions).len()
    }

    /// Starts what `start = "eager"` keeps ready: the shared child, or a spare for the next
    /// session.
    pub async fn warm(&self) {
        if self.config.start != StartMode::Eager || self.closing.load(Ordering::Acquire) {
            return;
        }
        let result = match self.config.isolation {
            Isolation::Shared => self.shared_link().await.map(drop),
            Isolation::Session => {
                let have = lock(&self.spare).as_ref().is_some_and(|l| !l.is_gone());
                if have {
                    Ok(())
                } else {
                    self.spawn(None).map(|l| *lock(&self.spare) = Some(l))
                }
            }
        };
        if let Err(e) = result {
            tracing::warn!(server = %self.spawner.server, error = %e, "cannot start the eager child");
        }
    }

    /// A new session: its own child (session isolation) or a place at the shared child. The
    /// `initialize` answer comes back with the client's id.
    pub async fn open_session(&self, init: Msg) -> Result<(Arc<Session>, Value), Refusal> {
        // The place is taken under the table's lock, so sessions opening at once on both
        // threads cannot pass `max_sessions` together; it is given back when the opening ends.
        {
            let sessions = lock(&self.sessions);
            let max = self.limits().max_sessions;
            if sessions.len() + self.opening.load(Ordering::Acquire) >= max {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                return Err(Refusal::Sessions(max));
            }
            self.opening.fetch_add(1, Ordering::AcqRel);
        }
        let opened = Opening(&self.opening);
        let id: Arc<str> = new_session_id().into();
        let client_id = init.get("id").cloned().unwrap_or(Value::Null);
        match self.config.isolation {
            Isolation::Shared => {
                let guard = self.shared_link().await?;
                let result = guard.1;
                let session = Arc::new(Session::new(Arc::clone(&id), None));
                {
                    let mut table = lock(&self.sessions);
                    table.insert(id, Arc::clone(&session));
                    drop(opened); // counted in the table now, under the same lock as the check
                }
                Ok((session, message::result(client_id, result)))
            }
            Isolation::Session => {
                let spare = lock(&self.spare).take().filter(|l| !l.is_gone());
                let link = match spare {
                    Some(l) => l,
                    None => self.spawn(Some(Arc::clone(&id)))?,
                };
                // The spare was started for no session yet: this one is its session now.
                let session = Arc::new(Session::new(Arc::clone(&id), Some(Arc::clone(&link))));
                {
                    let mut table = lock(&self.sessions);
                    table.insert(Arc::clone(&id), Arc::clone(&session));
                    drop(opened);
                }
                let answer = async {
                    let (_, mut rx) = link.call(init, Some(Arc::clone(&id))).await?;
                    // What the child sends before its answer (a log line, a request of its
                    // own) waits for the session's stream; the answer is what comes back.
                    loop {
                        let m = rx.recv().await.ok_or(Refusal::Gone)?;
                        if m.as_object().and_then(message::shape) == Some(Shape::Response) {
                            break Ok(m);
                        }
                        session.push(m);
                    }
                }
                .await;
                if let Some(me) = self.me.upgrade() {
                    tokio::spawn(async move { me.warm().await });
                }
                match answer {
                    Ok(v) if v.get("result").is_some() => Ok((session, v)),
                    other => {
                        self.end_session(&id, false);
                        match other {
                            Ok(v) => Err(Refusal::Spawn(
                                v.get("error")
                                    .map_or_else(|| v.to_string(), ToString::to_string),
                            )),
                            Err(e) => Err(e),
                        }
                    }
                }
            }
        }
    }

    /// Ends a session (its `DELETE`, idle reaping, or its child's exit).
    pub fn end_session(&self, id: &str, reaped: bool) -> bool {
        let Some(session) = lock(&self.sessions).remove(id) else {
            return false;
        };
        if let Some(link) = &session.link {
            if reaped {
                self.stats.reaps.fetch_add(1, Ordering::Relaxed);
            }
            link.stop();
        }
        true
    }

    /// The link a request of `session` goes to (or of a stateless client: the shared child).
    pub async fn link_for(&self, session: Option<&Session>) -> Result<Arc<Link>, Refusal> {
        match session.and_then(|s| s.link.clone()) {
            Some(link) if link.is_gone() => Err(Refusal::Gone),
            Some(link) => Ok(link),
            None => Ok(self.shared_link().await?.0),
        }
    }

    /// The shared child's `initialize` answer (for `server/discover` of stateless clients).
    pub async fn shared_init(&self) -> Result<Value, Refusal> {
        Ok(self.shared_link().await?.1)
    }

    /// Whether the shared child negotiated 2026-07-28 (then a stateless request's envelope is
    /// passed on as it is).
    pub async fn shared_speaks_stateless(&self) -> bool {
        self.shared.lock().await.as_ref().is_some_and(|s| {
            s.init.get("protocolVersion").and_then(Value::as_str) == Some(message::STATELESS)
        })
    }

    /// The shared child, started and initialised by the bridge when there is none.
    async fn shared_link(&self) -> Result<(Arc<Link>, Value), Refusal> {
        let mut shared = self.shared.lock().await;
        if let Some(s) = shared.as_ref().filter(|s| !s.link.is_gone()) {
            return Ok((Arc::clone(&s.link), s.init.clone()));
        }
        let link = self.spawn(None)?;
        let init = json!({
            "jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": message::PROTOCOL, "capabilities": {},
                       "clientInfo": {"name": "mcp-fleet-bridge", "version": env!("CARGO_PKG_VERSION")}}
        });
        let answer = async {
            let msg = init.as_object().cloned().unwrap_or_default();
            let (_, mut rx) = link.call(msg, None).await?;
            rx.recv().await.ok_or(Refusal::Gone)
        };
        let answer = match tokio::time::timeout(HANDSHAKE, answer).await {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                link.stop();
                return Err(e);
            }
            Err(_) => {
                link.stop();
                return Err(Refusal::Spawn(format!(
                    "it did not answer initialize within {HANDSHAKE:?}"
                )));
            }
        };
        let Some(result) = answer.get("result").cloned() else {
            link.stop();
            return Err(Refusal::Spawn(format!(
                "it refused initialize: {}",
                answer.get("error").unwrap_or(&Value::Null)
            )));
        };
        let done = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        if let Some(m) = done.as_object() {
            link.send(m).await?;
        }
        *shared = Some(Shared {
            link: Arc::clone(&link),
            init: result.clone(),
        });
        Ok((link, result))
    }

    /// Starts a child (for `session`, or shared/spare when `None`) after the limits agree.
    fn spawn(&self, session: Option<Arc<str>>) -> Result<Arc<Link>, Refusal> {
        if self.closing.load(Ordering::Acquire) {
            return Err(Refusal::Closing);
        }
        let inner = &self.spawner.inner;
        let settings = inner.settings();
        if inner.children.fetch_add(1, Ordering::AcqRel) >= settings.max_children {
            inner.children.fetch_sub(1, Ordering::AcqRel);
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::Children(settings.max_children));
        }
        let release = || {
            inner.children.fetch_sub(1, Ordering::AcqRel);
        };
        if let Err(why) = super::super::memory::budget_allows(
            settings.memory_budget,
            1,
            super::super::memory::FIRST_SERVER_GUESS,
        ) {
            release();
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::Memory(why));
        }
        let number = self.next_child.fetch_add(1, Ordering::Relaxed) + 1;
        let cgroup = inner.cgroups.prepare(
            &format!("{}.{number}", self.spawner.server),
            self.spawner.memory_limit,
        );
        let prefix = format!("{}.{number}", self.spawner.server);
        let started = super::super::child::spawn_stdio(
            &self.spawner.launch,
            &cgroup.procs,
            &self.spawner.log,
            prefix,
        );
        let (child, stdin, stdout) = match started {
            Ok(parts) => parts,
            Err(e) => {
                release();
                cgroup.remove();
                self.stats.spawn_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(server = %self.spawner.server, program = %self.spawner.launch.program.display(), error = %e, "cannot start a stdio child");
                return Err(Refusal::Spawn(e.to_string()));
            }
        };
        self.stats.spawns.fetch_add(1, Ordering::Relaxed);
        self.stats.children.fetch_add(1, Ordering::Relaxed);
        let router = self.router(session.clone());
        let me = self.me.clone();
        let inner_for_exit = Arc::clone(inner);
        let on_exit = Box::new(move |link: &Arc<Link>, exit: Exit| {
            inner_for_exit.children.fetch_sub(1, Ordering::AcqRel);
            if let Some(bridge) = me.upgrade() {
                bridge.child_gone(link, exit);
            }
        });
        Ok(Link::run(
            child,
            stdin,
            stdout,
            Start {
                number,
                router,
                on_exit,
                stats: Arc::clone(&self.stats),
                grace: settings.stop_grace,
                cgroup,
                server: Arc::clone(&self.spawner.server),
            },
        ))
    }

    /// A child is gone: a session that had it as its own ends (its next request gets 404);
    /// the shared child is started again by the next request that needs it.
    fn child_gone(&self, link: &Arc<Link>, exit: Exit) {
        if exit != Exit::Stopped {
            tracing::warn!(server = %self.spawner.server, child = link.number, ?exit, "stdio child ended by itself");
        }
        let own: Vec<Arc<str>> = lock(&self.sessions)
            .values()
            .filter(|s| s.link.as_ref().is_some_and(|l| Arc::ptr_eq(l, link)))
            .map(|s| Arc::clone(&s.id))
            .collect();
        for id in own {
            lock(&self.sessions).remove(&id);
        }
        let mut spare = lock(&self.spare);
        if spare.as_ref().is_some_and(|l| Arc::ptr_eq(l, link)) {
            *spare = None;
        }
    }

    /// Ends idle sessions (and their children), and an on-demand shared child nobody uses.
    pub async fn reap(&self) {
        let timeout = self.limits().idle_timeout;
        let idle: Vec<Arc<str>> = lock(&self.sessions)
            .values()
            .filter(|s| s.idle(timeout))
            .map(|s| Arc::clone(&s.id))
            .collect();
        for id in idle {
            tracing::debug!(server = %self.spawner.server, session = %id, "idle session ended");
            self.end_session(&id, true);
        }
        if self.config.start == StartMode::OnDemand && self.session_count() == 0 {
            let mut shared = self.shared.lock().await;
            if shared
                .as_ref()
                .is_some_and(|s| s.link.in_flight() == 0 && s.link.idle_for() >= timeout)
            {
                if let Some(s) = shared.take() {
                    self.stats.reaps.fetch_add(1, Ordering::Relaxed);
                    s.link.stop();
                }
            }
        }
    }

    /// Whether the server can serve: its shared child answers `ping`, or, with no child, its
    /// command can be started (never starts one).
    pub async fn healthy(&self, timeout: Duration) -> Result<(), String> {
        let link = self
            .shared
            .lock()
            .await
            .as_ref()
            .filter(|s| !s.link.is_gone())
            .map(|s| Arc::clone(&s.link));
        if let Some(link) = link {
            let ping = json!({"jsonrpc": "2.0", "id": 0, "method": "ping"});
            let msg = ping.as_object().cloned().unwrap_or_default();
            let answer = async {
                let (_, mut rx) = link.call(msg, None).await.map_err(|e| e.to_string())?;
                rx.recv().await.ok_or_else(|| "no answer".to_string())
            };
            return match tokio::time::timeout(timeout, answer).await {
                Ok(Ok(v)) if v.get("result").is_some() => Ok(()),
                Ok(Ok(v)) => Err(format!("ping answered {v}")),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(format!(
                    "the shared child did not answer ping within {timeout:?}"
                )),
            };
        }
        startable(&self.spawner.launch)
    }

    /// Every live child: (number, pid, last memory sample), for the memory watcher.
    pub fn children(&self) -> Vec<(u64, u32, Option<u64>)> {
        self.links()
            .iter()
            .filter(|l| !l.is_gone())
            .filter_map(|l| Some((l.number, l.pid?, l.memory())))
            .collect()
    }

    /// The memory watcher's sample of child `number`.
    pub fn record_memory(&self, number: u64, bytes: u64) {
        if let Some(l) = self.links().iter().find(|l| l.number == number) {
            l.set_memory(bytes);
        }
    }

    /// Ends child `number` (the memory policy's restart): its session ends with it.
    pub fn end_child(&self, number: u64) {
        let own = lock(&self.sessions)
            .values()
            .find(|s| s.link.as_ref().is_some_and(|l| l.number == number))
            .map(|s| Arc::clone(&s.id));
        match own {
            Some(id) => {
                self.end_session(&id, false);
            }
            None => {
                if let Some(l) = self.links().iter().find(|l| l.number == number) {
                    l.stop();
                }
            }
        }
    }

    /// The children: sessions' own, the spare, the shared one (when its lock is free; the
    /// watcher takes it next round otherwise).
    fn links(&self) -> Vec<Arc<Link>> {
        let mut links: Vec<Arc<Link>> = lock(&self.sessions)
            .values()
            .filter_map(|s| s.link.clone())
            .collect();
        links.extend(lock(&self.spare).clone());
        if let Ok(shared) = self.shared.try_lock() {
            links.extend(shared.as_ref().map(|s| Arc::clone(&s.link)));
        }
        links
    }

    /// Stops every child and refuses new ones (the server is stopping).
    pub async fn close(&self) {
        self.closing.store(true, Ordering::Release);
        let mut links: Vec<Arc<Link>> = lock(&self.sessions)
            .drain()
            .filter_map(|(_, s)| s.link.clone())
            .collect();
        links.extend(lock(&self.spare).take());
        links.extend(self.shared.lock().await.take().map(|s| s.link));
        for l in &links {
            l.stop();
        }
        for l in &links {
            l.ended().await;
        }
    }
}

/// Whether `launch`'s program exists and is executable (looked up in its PATH if bare).
fn startable(launch: &super::super::child::Launch) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &std::path::Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    let program = &launch.program;
    let found = if program.components().count() > 1 {
        executable(program)
    } else {
        launch
            .env
            .iter()
            .find(|(k, _)| k == "PATH")
            .is_some_and(|(_, path)| {
                path.split(':')
                    .any(|d| executable(&std::path::Path::new(d).join(program)))
            })
    };
    if found {
        Ok(())
    } else {
        Err(format!("{} is not an executable file", program.display()))
    }
}
