//! One child of a stdio server and the JSON-RPC channel to it: lines written to its stdin by one
//! writer task, lines read from its stdout by one reader task, and the keeper that waits for it
//! to exit or ends it (close stdin, wait, SIGTERM, wait, SIGKILL to its group, then its cgroup).
//!
//! Every request sent through a link gets a fresh numeric id of the link's own (and its
//! `progressToken`, if any, that same number), so answers go back to the request that asked
//! whatever ids its client used: two sessions both sending `"id": 1` to one shared child never
//! see each other's answers. What the child sends unasked (its notifications and its own
//! requests) goes to the link's `Router`.

use super::message::{self, Msg, Shape};
use super::stats::{Exit, Stats};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, watch, Notify};

/// Longest stdout line taken from a child; a longer one fails the request it answers, only.
pub const MAX_LINE: usize = 16 << 20;
/// Messages queued toward one POST's answer stream (progress, the child's requests, then the
/// answer). A client that stops reading fills it and its stream is closed.
pub const STREAM_QUEUE: usize = 256;
/// Lines queued toward a child's stdin; a writer waits when it is full (back-pressure on the
/// request, not memory).
const STDIN_QUEUE: usize = 64;

/// Where the child's unasked messages go (its notifications and its own requests).
pub type Router = Arc<dyn Fn(&Arc<Link>, Msg) + Send + Sync>;
/// Told once the child is gone, with why.
pub type OnExit = Box<dyn FnOnce(&Arc<Link>, Exit) + Send>;

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("the server process has exited")]
    Gone,
}

/// A request in flight: where its answer goes and the ids to put back.
struct Pending {
    client_id: Value,
    client_token: Option<Value>,
    session: Option<Arc<str>>,
    events: mpsc::Sender<Value>,
}

#[derive(Default)]
struct State {
    next_id: u64,
    pending: HashMap<u64, Pending>,
}

pub struct Link {
    pub number: u64,
    pub pid: Option<u32>,
    to_child: mpsc::Sender<Vec<u8>>,
    state: Mutex<State>,
    gone: AtomicBool,
    stop: Notify,
    ended: watch::Sender<bool>,
    last_active: Mutex<Instant>,
    router: Router,
    /// The memory watcher's last sample (PSS bytes; 0: none yet).
    memory: std::sync::atomic::AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What starting a link needs besides the child itself.
pub struct Start {
    pub number: u64,
    pub router: Router,
    pub on_exit: OnExit,
    pub stats: Arc<Stats>,
    pub grace: Duration,
    pub cgroup: super::super::cgroup::ServerCgroup,
    pub server: Arc<str>,
}

impl Link {
    /// Takes over a started child: its pipes, its cgroup, its end.
    pub fn run(
        mut child: tokio::process::Child,
        stdin: tokio::process::ChildStdin,
        stdout: tokio::process::ChildStdout,
        start: Start,
    ) -> Arc<Self> {
        let (to_child, from_bridge) = mpsc::channel(STDIN_QUEUE);
        let (ended, _) = watch::channel(false);
        let link = Arc::new(Self {
            number: start.number,
            pid: child.id(),
            to_child,
            state: Mutex::new(State::default()),
            gone: AtomicBool::new(false),
            stop: Notify::new(),
            ended,
            last_active: Mutex::new(Instant::now()),
            router: start.router,
            memory: std::sync::atomic::AtomicU64::new(0),
        });
        let (close_stdin, stdin_closed) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(write_lines(stdin, from_bridge, stdin_closed));
        let reader = tokio::spawn(read_lines(
            Arc::clone(&link),
            stdout,
            Arc::clone(&start.stats),
        ));
        let keeper_link = Arc::clone(&link);
        tokio::spawn(async move {
            let link = keeper_link;
            let oom_before = start.cgroup.oom_kills();
            let stopped = tokio::select! {
                _ = child.wait() => false,
                _ = link.stop.notified() => true,
            };
            if stopped {
                // The stdio transport's shutdown: close stdin, wait, SIGTERM, wait, SIGKILL.
                drop(close_stdin);
                if tokio::time::timeout(start.grace, child.wait())
                    .await
                    .is_err()
                {
                    super::super::child::stop(&mut child, start.grace).await;
                }
            }
            let status = child.wait().await.ok();
            if let Some(pid) = link.pid {
                super::super::child::kill_group(pid);
            }
            let left = start.cgroup.process_count();
            if left > 0 {
                tracing::warn!(server = %start.server, child = link.number, processes = left, "processes the child left behind are ended with it");
                if !start.cgroup.kill_all() {
                    start.cgroup.kill_listed();
                }
            }
            start.cgroup.remove();
            start
                .stats
                .outlived
                .fetch_add(start.cgroup.process_count() as u64, Ordering::Relaxed);
            let exit = if stopped {
                Exit::Stopped
            } else if start.cgroup.oom_kills() > oom_before {
                Exit::Oom
            } else if status.is_some_and(|s| s.success()) {
                Exit::Exited
            } else {
                Exit::Crashed
            };
            // Every line it wrote before it died is delivered before its requests are failed.
            // (bounded: without cgroups a helper that left the group may hold stdout open).
            if tokio::time::timeout(Duration::from_secs(1), reader)
                .await
                .is_err()
            {
                tracing::debug!(
                    child = link.number,
                    "a helper still holds the child's stdout"
                );
            }
            link.fail_all("the server process has exited");
            start.stats.exited(exit);
            tracing::debug!(server = %start.server, child = link.number, ?status, ?exit, "stdio child ended");
            (start.on_exit)(&link, exit);
            link.ended.send_replace(true);
        });
        link
    }

    pub fn memory(&self) -> Option<u64> {
        Some(self.memory.load(Ordering::Relaxed)).filter(|&b| b > 0)
    }

    pub fn set_memory(&self, bytes: u64) {
        self.memory.store(bytes, Ordering::Relaxed);
    }

    pub fn is_gone(&self) -> bool {
        self.gone.load(Ordering::Acquire)
    }

    /// Sends a request; its messages (progress, then the answer with the client's id) arrive on
    /// the returned receiver. The number is the request's id toward the child (for `cancel`).
    pub async fn call(
        &self,
        mut msg: Msg,
        session: Option<Arc<str>>,
    ) -> Result<(u64, mpsc::Receiver<Value>), LinkError> {
        if self.is_gone() {
            return Err(LinkError::Gone);
        }
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        let id = {
            let mut st = lock(&self.state);
            st.next_id += 1;
            let id = st.next_id;
            let client_id = msg
                .insert("id".into(), Value::from(id))
                .unwrap_or(Value::Null);
            let client_token = message::progress_token(&msg).cloned();
            if client_token.is_some() {
                message::set_progress_token(&mut msg, Value::from(id));
            }
            st.pending.insert(
                id,
                Pending {
                    client_id,
                    client_token,
                    session,
                    events: tx,
                },
            );
            id
        };
        self.touch();
        if self.to_child.send(message::line(&msg)).await.is_err() {
            lock(&self.state).pending.remove(&id);
            return Err(LinkError::Gone);
        }
        Ok((id, rx))
    }

    /// Sends a notification or an answer to one of the child's requests, as it is.
    pub async fn send(&self, msg: &Msg) -> Result<(), LinkError> {
        self.touch();
        self.to_child
            .send(message::line(msg))
            .await
            .map_err(|_| LinkError::Gone)
    }

    /// The request `id` is abandoned (its stream closed, or its client cancelled it): the child
    /// is told, and a late answer is dropped.
    pub async fn cancel(&self, id: u64, reason: &str) {
        if lock(&self.state).pending.remove(&id).is_none() {
            return;
        }
        let note = serde_json::json!({
            "jsonrpc": "2.0", "method": "notifications/cancelled",
            "params": {"requestId": id, "reason": reason}
        });
        if let Some(m) = note.as_object() {
            let _ = self.send(m).await;
        }
    }

    /// A client's `notifications/cancelled`: its `requestId` is the client's id, in `session`.
    pub async fn cancel_client(&self, session: Option<&str>, client_id: &Value, reason: &str) {
        let id = lock(&self.state)
            .pending
            .iter()
            .find(|(_, p)| p.session.as_deref() == session && p.client_id == *client_id)
            .map(|(id, _)| *id);
        if let Some(id) = id {
            self.cancel(id, reason).await;
        }
    }

    /// Requests in flight.
    pub fn in_flight(&self) -> usize {
        lock(&self.state).pending.len()
    }

    /// The newest request in flight of `session` (any session when `None`): where the child's
    /// own requests and notifications go while a call is open, as the client expects them on
    /// that call's stream.
    pub fn newest_stream(&self, session: Option<&str>) -> Option<mpsc::Sender<Value>> {
        let st = lock(&self.state);
        st.pending
            .iter()
            .filter(|(_, p)| session.is_none() || p.session.as_deref() == session)
            .max_by_key(|(id, _)| **id)
            .map(|(_, p)| p.events.clone())
    }

    pub fn idle_for(&self) -> Duration {
        lock(&self.last_active).elapsed()
    }

    fn touch(&self) {
        *lock(&self.last_active) = Instant::now();
    }

    /// Ends the child (the keeper does the shutdown sequence); returns at once.
    pub fn stop(&self) {
        self.stop.notify_one();
    }

    /// Waits until the child is gone and counted.
    pub async fn ended(&self) {
        let mut rx = self.ended.subscribe();
        let _ = rx.wait_for(|e| *e).await;
    }

    fn fail_all(&self, why: &str) {
        self.gone.store(true, Ordering::Release);
        let pending: Vec<Pending> = lock(&self.state).pending.drain().map(|(_, p)| p).collect();
        for p in pending {
            let _ = p
                .events
                .try_send(message::error(p.client_id, message::INTERNAL_ERROR, why));
        }
    }

    /// A line from the child's stdout.
    fn dispatch(self: &Arc<Self>, mut msg: Msg) {
        self.touch();
        match message::shape(&msg) {
            Some(Shape::Response) => {
                let Some(id) = msg.get("id").and_then(Value::as_u64) else {
                    tracing::debug!("a stdio child answered an id the bridge never sent");
                    return;
                };
                let Some(p) = lock(&self.state).pending.remove(&id) else {
                    return; // cancelled, or its client went away
                };
                msg.insert("id".into(), p.client_id);
                let _ = p.events.try_send(Value::Object(msg));
            }
            Some(Shape::Notification) if message::method(&msg) == "notifications/progress" => {
                let token = msg
                    .get("params")
                    .and_then(|p| p.get("progressToken"))
                    .and_then(Value::as_u64);
                let st = lock(&self.state);
                let Some(p) = token.and_then(|t| st.pending.get(&t)) else {
                    return;
                };
                if let (Some(params), Some(t)) = (
                    msg.get_mut("params").and_then(Value::as_object_mut),
                    p.client_token.clone(),
                ) {
                    params.insert("progressToken".into(), t);
                }
                let _ = p.events.try_send(Value::Object(msg));
            }
            Some(_) => (self.router)(self, msg),
            None => tracing::debug!("a stdio child wrote a line that is not JSON-RPC"),
        }
    }

    /// Fails the request whose answer line was too long to take.
    fn fail_one(&self, id: u64, why: &str) {
        if let Some(p) = lock(&self.state).pending.remove(&id) {
            let _ = p
                .events
                .try_send(message::error(p.client_id, message::INTERNAL_ERROR, why));
        }
    }
}

async fn write_lines(
    mut stdin: tokio::process::ChildStdin,
    mut lines: mpsc::Receiver<Vec<u8>>,
    mut closed: tokio::sync::oneshot::Receiver<()>,
) {
    loop {
        tokio::select! {
            line = lines.recv() => match line {
                Some(line) => {
                    if stdin.write_all(&line).await.is_err() || stdin.flush().await.is_err() {
                        return;
                    }
                }
                None => return,
            },
            _ = &mut closed => return,
        }
    }
}

/// Bytes of an over-long line kept to find its id.
const KEEP: usize = 64;

async fn read_lines(link: Arc<Link>, stdout: tokio::process::ChildStdout, stats: Arc<Stats>) {
    let mut reader = BufReader::with_capacity(16 * 1024, stdout);
    let mut line: Vec<u8> = Vec::new();
    // An over-long line: its first bytes, its last bytes, and that it overflowed.
    let mut tail: Vec<u8> = Vec::new();
    let mut overflowed = false;
    loop {
        let (done, used) = match reader.fill_buf().await {
            Ok([]) | Err(_) => return,
            Ok(buf) => match buf.iter().position(|&b| b == b'\n') {
                Some(end) => {
                    take(&mut line, &mut tail, &mut overflowed, &buf[..end]);
                    (true, end + 1)
                }
                None => {
                    take(&mut line, &mut tail, &mut overflowed, buf);
                    (false, buf.len())
                }
            },
        };
        reader.consume(used);
        if !done {
            continue;
        }
        if overflowed {
            stats.oversized.fetch_add(1, Ordering::Relaxed);
            match message::sniff_id(&line, &tail) {
                Some(id) => link.fail_one(id, "the server's answer is longer than 16 MiB"),
                None => tracing::warn!("a stdio child wrote a line over 16 MiB; dropped"),
            }
        } else if !line.iter().all(u8::is_ascii_whitespace) {
            match serde_json::from_slice::<Value>(&line) {
                Ok(Value::Object(msg)) => link.dispatch(msg),
                _ => {
                    stats.non_json.fetch_add(1, Ordering::Relaxed);
                    let shown = String::from_utf8_lossy(&line[..line.len().min(200)]).into_owned();
                    tracing::warn!(child = link.number, line = %shown, "a stdio child wrote a line that is not JSON; not forwarded");
                }
            }
        }
        line.clear();
        tail.clear();
        overflowed = false;
        if line.capacity() > 1 << 20 {
            line.shrink_to(64 * 1024); // one large answer must not pin its buffer for good
        }
    }
}

/// Adds `bytes` to the line being read; past `MAX_LINE` only its head and a rolling tail stay.
fn take(line: &mut Vec<u8>, tail: &mut Vec<u8>, overflowed: &mut bool, bytes: &[u8]) {
    if !*overflowed && line.len() + bytes.len() <= MAX_LINE {
        line.extend_from_slice(bytes);
        return;
    }
    if !*overflowed {
        *overflowed = true;
        tail.extend_from_slice(&line[line.len().saturating_sub(KEEP)..]);
        line.truncate(KEEP);
        line.shrink_to_fit();
    }
    tail.extend_from_slice(&bytes[bytes.len().saturating_sub(KEEP)..]);
    let cut = tail.len().saturating_sub(KEEP);
    tail.drain(..cut);
}
