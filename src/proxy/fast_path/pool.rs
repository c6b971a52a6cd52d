//! Idle upstream connections of the fast path, kept per server address for reuse.
//!
//! Pingora's pool watches every idle connection with a task of its own; here an idle connection
//! costs nothing until it is taken, and is checked then: tokio already knows from epoll whether
//! the server closed it (or sent something it should not have), so the check is a `try_read`
//! that usually makes no system call at all.
//!
//! One pool for the process, behind a lock held for a push or a pop: the proxy's tasks move
//! between worker threads (Pingora's work-stealing runtime, which `serve` keeps), and per-thread
//! pools then miss connections idle on another thread (tried: a client's third request opened
//! a third upstream connection). All worker threads share one tokio I/O driver, so a
//! connection registered by one is woken on any.

use crate::fast_hash::FastHash;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Instant;
use tokio::net::TcpStream;

use crate::proxy::policy::POOLED_IDLE_LIMIT as IDLE_LIMIT;

/// A sweep of expired connections every this many returns.
const SWEEP_EVERY: u64 = 4096;

struct Idle {
    stream: TcpStream,
    since: Instant,
}

#[derive(Default)]
struct Inner {
    by_addr: HashMap<SocketAddr, Vec<Idle>, FastHash>,
    total: usize,
    returns: u64,
}

#[derive(Default)]
pub struct UpstreamPool {
    inner: Mutex<Inner>,
}

/// The connection is usable: no end of stream, no stray bytes, no error pending.
fn still_open(stream: &TcpStream) -> bool {
    let mut probe = [0u8; 1];
    matches!(stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

impl UpstreamPool {
    /// The most recently used open connection to `addr`, if any (`now`: a recent clock
    /// reading).
    pub fn take(&self, addr: SocketAddr, now: Instant) -> Option<TcpStream> {
        loop {
            let idle = {
                let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
                let idle = inner.by_addr.get_mut(&addr)?.pop()?;
                inner.total -= 1;
                crate::metrics::metrics().upstream_idle.dec();
                idle
            };
            if now.saturating_duration_since(idle.since) < IDLE_LIMIT && still_open(&idle.stream) {
                return Some(idle.stream);
            }
        }
    }

    /// Keeps `stream` for the next request to `addr`, unless `limit` connections are idle
    /// (`now`: a recent clock reading).
    pub fn put(&self, addr: SocketAddr, stream: TcpStream, limit: usize, now: Instant) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.returns += 1;
        if inner.returns % SWEEP_EVERY == 0 {
            inner.sweep(now);
        }
        if inner.total >= limit {
            return;
        }
        inner.total += 1;
        crate::metrics::metrics().upstream_idle.inc();
        inner
            .by_addr
            .entry(addr)
            .or_default()
            .push(Idle { stream, since: now });
    }

    #[cfg(test)]
    fn idle(&self) -> usize {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).total
    }
}

impl Inner {
    /// Closes connections idle too long, including those to servers no longer configured.
    fn sweep(&mut self, now: Instant) {
        let mut closed = 0;
        self.by_addr.retain(|_, conns| {
            let before = conns.len();
            conns.retain(|c| now.duration_since(c.since) < IDLE_LIMIT);
            closed += before - conns.len();
            !conns.is_empty()
        });
        self.total -= closed;
        crate::metrics::metrics().upstream_idle.sub(closed as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn reuses_open_connections_and_drops_closed_ones_and_any_over_the_limit() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("test setup");
        let addr = listener.local_addr().expect("test setup");
        let pool = UpstreamPool::default();
        assert!(pool.take(addr, Instant::now()).is_none());

        let a = TcpStream::connect(addr).await.expect("test setup");
        let (mut a_server, _) = listener.accept().await.expect("test setup");
        let b = TcpStream::connect(addr).await.expect("test setup");
        let (_b_server, _) = listener.accept().await.expect("test setup");
        let c = TcpStream::connect(addr).await.expect("test setup");
        let b_port = b.local_addr().expect("test setup").port();
        pool.put(addr, a, 2, Instant::now());
        pool.put(addr, b, 2, Instant::now());
        pool.put(addr, c, 2, Instant::now());
        assert_eq!(pool.idle(), 2, "the third is over the limit");

        // The server closes `a`: once epoll has said so, `take` skips it.
        a_server.shutdown().await.expect("test setup");
        drop(a_server);
        let got = pool.take(addr, Instant::now()).expect("test setup");
        assert_eq!(
            got.local_addr().expect("test setup").port(),
            b_port,
            "most recent first"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            pool.take(addr, Instant::now()).is_none(),
            "closed connection skipped"
        );
        assert_eq!(pool.idle(), 0);
    }
}
