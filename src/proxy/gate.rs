//! The listener's admission rules, which Pingora leaves to the application: at most
//! `proxy.max_connections` open client connections, and a deadline for every request head.
//!
//! Pingora times each read of a request head separately (60 s), so a client sending one byte
//! every few seconds holds a connection and a task forever (slowloris). The gate runs the HTTP/1
//! connection loop itself (the same loop as Pingora's `ServerApp` for HTTP apps, without h2c,
//! which we do not serve) and races every request against a deadline that stops as soon as
//! the proxy has the whole head: `proxy.header_timeout` from accept for the first request,
//! `proxy.client_idle_timeout` from the end of the previous answer for the next ones.

use super::fast_path::{FastPath, Outcome, Plan};
use super::reply;
use super::FleetProxy;
use crate::upstream::Registry;
use async_trait::async_trait;
use futures::task::AtomicWaker;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::Stream;
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use std::future::Future;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::Poll;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

/// The deadlines of one request, shared by the gate (which owns the request's future) and the
/// proxy's hooks (which know when the head has been read, when the request went upstream and
/// when the answer's head came back).
///
/// Pingora applies one read timeout to every read of an upstream answer, head and body alike,
/// but MCP needs two: a short wait for the first byte (5 s, the seed's `timeout`) and a long one
/// between SSE events (5 min). The peer gets the long one; the short one is armed here when the
/// request is sent and disarmed when the answer's head arrives. When it expires the gate shuts
/// the upstream socket down, which makes Pingora's pending read fail at once.
///
/// That is safe without owning a duplicate of the descriptor because the gate only acts while
/// the request's future is suspended, in the same task: while armed, the request holds the
/// upstream connection (it is neither pooled nor closed), and every path on which Pingora lets go
/// of it runs a disarming hook first or in the same poll.
#[derive(Debug, Default)]
pub struct RequestClock {
    head_seen: AtomicBool,
    /// Nanoseconds since `epoch()` when the first-byte wait ends; 0 when not armed.
    first_byte_deadline: AtomicU64,
    upstream_fd: AtomicI32,
    fired: AtomicBool,
    waker: AtomicWaker,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl RequestClock {
    pub fn mark_head(&self) {
        self.head_seen.store(true, Ordering::Release);
    }

    fn head_seen(&self) -> bool {
        self.head_seen.load(Ordering::Acquire)
    }

    /// The request was written to upstream connection `fd`: its answer must start within
    /// `after`.
    pub fn arm_first_byte(&self, fd: RawFd, after: Duration) {
        let at = (Instant::now() + after).saturating_duration_since(epoch());
        self.upstream_fd.store(fd, Ordering::Release);
        self.fired.store(false, Ordering::Release);
        self.first_byte_deadline
            .store((at.as_nanos() as u64).max(1), Ordering::Release);
        self.waker.wake();
    }

    pub fn disarm_first_byte(&self) {
        self.first_byte_deadline.store(0, Ordering::Release);
    }

    pub fn first_byte_fired(&self) -> bool {
        self.fired.load(Ordering::Acquire)
    }

    fn first_byte_deadline(&self) -> Option<Instant> {
        match self.first_byte_deadline.load(Ordering::Acquire) {
            0 => None,
            n => Some(epoch() + Duration::from_nanos(n)),
        }
    }

    /// The first-byte wait ran out: cut the upstream connection.
    #[allow(unsafe_code)]
    fn fire(&self) {
        if self.first_byte_deadline.swap(0, Ordering::AcqRel) == 0 {
            return;
        }
        self.fired.store(true, Ordering::Release);
        let fd = self.upstream_fd.load(Ordering::Acquire);
        // SAFETY: shutdown(2) touches no memory. The descriptor is the armed request's open
        // upstream socket: see the type's comment for why it cannot have been closed or reused.
        unsafe {
            libc::shutdown(fd, libc::SHUT_RDWR);
        }
    }
}

pub struct Gate {
    proxy: Arc<HttpProxy<FleetProxy>>,
    fast: FastPath,
    registry: Arc<Registry>,
    open: AtomicUsize,
}

impl Gate {
    pub fn new(proxy: HttpProxy<FleetProxy>, fast: FastPath, registry: Arc<Registry>) -> Self {
        Self {
            proxy: Arc::new(proxy),
            fast,
            registry,
            open: AtomicUsize::new(0),
        }
    }

    /// Reads until the fast path can decide on the head at the front of `buf`; None when the
    /// client closed (or broke) the connection first.
    async fn next_plan(&self, stream: &mut Stream, buf: &mut Vec<u8>) -> Option<Plan> {
        loop {
            if !buf.is_empty() {
                match self.fast.plan(buf) {
                    Plan::Partial => {}
                    decided => return Some(decided),
                }
            }
            buf.reserve(HEAD_READ);
            match stream.read_buf(buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }
}

/// Bytes asked for per read of a request head.
const HEAD_READ: usize = 4096;

/// Puts bytes already read back in front of the connection, for Pingora to read again.
fn unread(stream: Stream, bytes: &[u8]) -> Option<Stream> {
    if bytes.is_empty() {
        return Some(stream);
    }
    match stream
        .into_any()
        .downcast::<pingora::protocols::l4::stream::Stream>()
    {
        Ok(mut l4) => {
            l4.rewind(bytes);
            let stream: Stream = l4;
            Some(stream)
        }
        Err(_) => {
            tracing::warn!("client connection of an unexpected type; closing it");
            None
        }
    }
}

/// Releases a connection slot however the connection ends.
struct Slot<'a>(&'a AtomicUsize);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
        crate::metrics::metrics().connections.dec();
    }
}

/// The whole answer to a connection over `proxy.max_connections`, built once.
fn overloaded_answer() -> &'static [u8] {
    static ANSWER: OnceLock<Vec<u8>> = OnceLock::new();
    ANSWER.get_or_init(|| {
        let body = reply::jsonrpc_error(
            reply::code::UNAVAILABLE,
            "too many client connections (proxy.max_connections)",
            None,
        );
        let mut out = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nretry-after: 1\r\ncache-control: no-store\r\n\
             connection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        out.extend_from_slice(&body);
        out
    })
}

/// Answers 503 and closes. The request is read (a little, briefly) after the answer so that
/// closing with unread bytes does not turn into a reset the client sees instead of the 503.
async fn refuse(mut stream: Stream) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(overloaded_answer()).await?;
        stream.flush().await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut left: usize = 64 * 1024;
        while left > 0 {
            let n = stream.read(&mut sink).await?;
            if n == 0 {
                break;
            }
            left = left.saturating_sub(n);
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
}

#[async_trait]
impl ServerApp for Gate {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let limits = Arc::clone(&self.registry.load().proxy);
        let open = self.open.fetch_add(1, Ordering::AcqRel) + 1;
        crate::metrics::metrics().connections.inc();
        let _slot = Slot(&self.open);
        if open > limits.max_connections {
            crate::metrics::refused("max_connections");
            refuse(stream).await;
            return None;
        }
        let idle_secs = limits.client_idle_timeout.as_secs().max(1);
        let mut deadline = limits.header_timeout;
        let mut stream = stream;
        let mut persistent: Option<HttpPersistentSettings> = None;
        let mut buf: Vec<u8> = Vec::new();
        loop {
            let head_deadline = Instant::now() + deadline;
            let plan =
                tokio::time::timeout_at(head_deadline, self.next_plan(&mut stream, &mut buf));
            match plan.await {
                Err(_) => {
                    crate::metrics::refused("header_timeout");
                    tracing::debug!(?deadline, "request head not received in time; closing");
                    return None;
                }
                Ok(None) => return None,
                Ok(Some(Plan::Take(exchange))) => {
                    let closing = *shutdown.borrow();
                    match self
                        .fast
                        .exchange(&mut stream, &mut buf, exchange, closing)
                        .await
                    {
                        Outcome::KeepAlive => {
                            if buf.capacity() > 4 * HEAD_READ && buf.is_empty() {
                                buf = Vec::new();
                            }
                            persistent = None;
                            deadline = limits.client_idle_timeout;
                            continue;
                        }
                        Outcome::Close => return None,
                    }
                }
                Ok(Some(_)) => {}
            }
            // Pingora's path: it reads the request again from the bytes given back.
            crate::metrics::metrics().pingora_path.inc();
            stream = unread(stream, &buf)?;
            buf = Vec::new();
            let mut session = ServerSession::new_http1(stream);
            match persistent.take() {
                Some(settings) => settings.apply_to_session(&mut session),
                None => session.set_keepalive(Some(idle_secs)),
            }
            if *shutdown.borrow() {
                session.set_keepalive(None);
            }
            let clock = Arc::new(RequestClock::default());
            session.set_connection_user_context(Some(Box::new(Arc::clone(&clock))));

            let mut work = self.proxy.process_new_http(session, shutdown);
            let timer = tokio::time::sleep_until(head_deadline);
            tokio::pin!(timer);
            let done = std::future::poll_fn(|cx| {
                if let Poll::Ready(done) = work.as_mut().poll(cx) {
                    return Poll::Ready(Some(done));
                }
                clock.waker.register(cx.waker());
                loop {
                    let next = if clock.head_seen() {
                        clock.first_byte_deadline()
                    } else {
                        Some(head_deadline)
                    };
                    let Some(next) = next else {
                        return Poll::Pending;
                    };
                    if timer.deadline() != next {
                        timer.as_mut().reset(next);
                    }
                    if timer.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    if !clock.head_seen() {
                        return Poll::Ready(None);
                    }
                    clock.fire();
                }
            })
            .await;
            let Some(done) = done else {
                crate::metrics::refused("header_timeout");
                tracing::debug!(?deadline, "request head not received in time; closing");
                return None;
            };
            let (next, settings) = done?.consume();
            stream = next;
            persistent = settings;
            deadline = limits.client_idle_timeout;
        }
    }

    async fn cleanup(&self) {
        self.proxy.http_cleanup().await;
    }
}
