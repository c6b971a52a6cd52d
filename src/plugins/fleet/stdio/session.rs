//! One MCP session of a bridged server: its own child (session isolation), where the messages
//! for its client wait (its open stream, else a bounded backlog), its subscriptions, and when it
//! was last used.

use super::bridge::lock;
use super::link::Link;
use serde_json::Value;
use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Messages kept for a session that has no stream open to take them; the oldest go first.
const BACKLOG: usize = 256;

/// Where messages for a session wait for its client.
#[derive(Default)]
struct Outbox {
    stream: Option<mpsc::Sender<Value>>,
    backlog: VecDeque<Value>,
}

pub struct Session {
    pub id: Arc<str>,
    /// Its own child (`isolation = "session"`).
    pub link: Option<Arc<Link>>,
    outbox: Mutex<Outbox>,
    /// Resource URIs it subscribed to (shared children: updates go to subscribers only).
    pub subscriptions: Mutex<HashSet<String>>,
    last_used: Mutex<Instant>,
}

impl Session {
    pub fn new(id: Arc<str>, link: Option<Arc<Link>>) -> Self {
        Self {
            id,
            link,
            outbox: Mutex::default(),
            subscriptions: Mutex::default(),
            last_used: Mutex::new(Instant::now()),
        }
    }

    pub fn touch(&self) {
        *lock(&self.last_used) = Instant::now();
    }

    /// Opens the session's stream (`GET`): what waited in the backlog comes first. `None`
    /// when one is open already.
    pub fn open_stream(&self) -> Option<mpsc::Receiver<Value>> {
        let mut out = lock(&self.outbox);
        if out.stream.as_ref().is_some_and(|s| !s.is_closed()) {
            return None;
        }
        let (tx, rx) = mpsc::channel(super::link::STREAM_QUEUE);
        while let Some(m) = out.backlog.pop_front() {
            if tx.try_send(m).is_err() {
                break;
            }
        }
        out.stream = Some(tx);
        Some(rx)
    }

    fn has_stream(&self) -> bool {
        lock(&self.outbox)
            .stream
            .as_ref()
            .is_some_and(|s| !s.is_closed())
    }

    /// Queues `msg` for the client. `false`: its stream is full (the client stopped reading).
    pub fn push(&self, msg: Value) -> bool {
        let mut out = lock(&self.outbox);
        if let Some(tx) = out.stream.as_ref().filter(|s| !s.is_closed()) {
            return match tx.try_send(msg) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    out.stream = None;
                    false
                }
                Err(mpsc::error::TrySendError::Closed(m)) => {
                    out.stream = None;
                    out.backlog.push_back(m);
                    true
                }
            };
        }
        out.backlog.push_back(msg);
        while out.backlog.len() > BACKLOG {
            out.backlog.pop_front();
        }
        true
    }

    pub fn idle(&self, timeout: Duration) -> bool {
        lock(&self.last_used).elapsed() >= timeout
            && !self.has_stream()
            && self.link.as_ref().is_none_or(|l| l.in_flight() == 0)
    }
}

/// A session id nobody can guess: 128 random bits, hex.
pub fn new_session_id() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::getrandom(&mut bytes).is_err() {
        // No randomness from the kernel: a counter and the clock still never repeat here.
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        bytes[..8].copy_from_slice(&n.to_le_bytes());
        bytes[8..].copy_from_slice(&t.to_le_bytes());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
