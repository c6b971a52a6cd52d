//! The fast path: the requests of the Streamable HTTP transport (`POST`s, with a chunked body
//! up to 64 KiB or any `Content-Length` within `proxy.max_body`, the standalone `GET` event
//! stream, the session's `DELETE`), exchanged in the connection's own task with one parse of each head, one write
//! each way and a pool of idle upstream connections that needs no task per connection.
//!
//! Pingora's proxy spends two to three times nginx's CPU per small request (boxed futures per
//! hook, a channel pair between the two sides, header maps rebuilt, a watcher task per pooled
//! connection) and about four times nginx's memory per open event stream; measured in
//! BENCHMARKS.md. Everything else (larger chunked uploads or ones with trailers, `Expect`, `Connection` options
//! other than `keep-alive` and `close`, local endpoints, any request admission refuses, a list
//! answer to filter) goes to Pingora's path untouched, and with `proxy.fast_path = false`
//! everything does. This engine only moves bytes: admission, the choice of server, retries,
//! blame, the answers it gives and the fields it rewrites are the policy core's, as on
//! Pingora's path.

mod chunked;
mod plan;
mod pool;
mod relay;

use relay::{linger, read_at_least, send, upload, write_all, Upload};
mod scratch;

use super::policy::{
    self, admit, answer, enter, Admission, Admitted, Attempts, BodyFraming, Context, Entry,
    Failure, Head, Refusal, RoutingFields, SharedEdge, Verdict,
};
use super::session::SharedCodec;
use super::timer::{after, Timers};
use super::wire;
use crate::upstream::{clock, Backend, Registry, UpstreamSet};
use chunked::{ChunkedBody, Dechunked};
use pool::UpstreamPool;
use scratch::Scratch;
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpStream;

/// Largest request body the fast path reads whole before a server is chosen (as nginx does by
/// default); the rest of a larger one is passed on as it arrives, after its head.
const BODY_LIMIT: u64 = 64 * 1024;
/// Largest request head the fast path parses; a larger one goes to Pingora's path, which
/// applies `proxy.max_header_bytes`.
const HEAD_LIMIT: usize = 16 * 1024;
/// Fields parsed per head; a request with more goes to Pingora's path.
const MAX_FIELDS: usize = 64;
/// Largest answer head accepted from a server.
const ANSWER_HEAD_LIMIT: usize = 64 * 1024;
/// Read size for answers.
const READ_CHUNK: usize = 16 * 1024;
/// Room left at the front of the upstream head for its request line.
const LINE_ROOM: usize = 192;

/// A client connection as the fast path reads and writes it: the TCP socket itself when
/// nothing stands between (see `gate`), else Pingora's stream (TLS).
pub trait Client: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Client for T {}

/// What to do with the head at the front of a connection's buffer.
// `Take` carries the admitted request inline: moved once, cheaper than an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Plan {
    /// Not all of it has arrived.
    Partial,
    /// Pingora's path takes it.
    Defer,
    /// Boxed: the plan passes through five futures' states on its way to the exchange, and
    /// moving 312 bytes at each step cost more than the allocation.
    Take(Box<Exchange>),
}

/// A request the fast path has taken, with everything read from its head.
pub struct Exchange {
    admitted: Admitted,
    head_len: usize,
    /// The body's length in the client's bytes (after the head).
    body_len: usize,
    /// A chunked body, decoded (what the policy reads) and framed again as one chunk (what the
    /// server gets); `None`: the server gets the client's bytes.
    dechunked: Option<Dechunked>,
    /// The head as the server gets it from `head_start` on, minus `Host` and the final CRLF
    /// (they depend on the server picked).
    upstream_head: Scratch,
    head_start: usize,
    /// The request's method (`POST`, `GET` or `DELETE`).
    verb: &'static str,
    /// The `Mcp-Method` label of its metrics.
    method: &'static str,
    /// The client sent `Connection: close`: answer with it and close after.
    client_close: bool,
    /// When the head was read whole and admitted, and that as `clock::now_ms()`.
    started: Instant,
    started_ms: u64,
}

/// How a taken request ended, for the connection loop.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    KeepAlive,
    Close,
}

pub struct FastPath {
    registry: Arc<Registry>,
    codec: SharedCodec,
    edge: SharedEdge,
    pool: UpstreamPool,
}

enum Framing {
    Empty,
    Length(u64),
    Chunked(ChunkedBody),
    UntilClose,
}

/// A parsed field name is `lower` (see `wire::name_is` for what `lower` may hold).
fn is(name: &str, lower: &str) -> bool {
    wire::name_is(name, lower)
}

/// Removes what has arrived of a `whole`-byte request from the front of `buf`; the number of
/// its bytes still to come.
fn take_request(buf: &mut Vec<u8>, whole: usize) -> usize {
    let arrived = whole.min(buf.len());
    buf.drain(..arrived);
    whole - arrived
}

/// How much of the request a failed write got out.
enum Sent {
    All,
    /// The first write failed: the kernel took none of it.
    Nothing,
    Part,
    TimedOut,
}

impl FastPath {
    pub fn new(registry: Arc<Registry>, codec: SharedCodec, edge: SharedEdge) -> Self {
        Self {
            registry,
            codec,
            edge,
            pool: UpstreamPool::default(),
        }
    }

    /// Carries out a taken request on `client`, whose buffer `buf` holds its head (and perhaps
    /// more); the request's bytes are removed from `buf` whatever happens.
    pub async fn exchange<C: Client>(
        &self,
        client: &mut C,
        timers: &mut Timers,
        buf: &mut Vec<u8>,
        ex: Box<Exchange>,
        closing: bool,
    ) -> Outcome {
        let metrics = crate::metrics::metrics();
        metrics.fast_path.inc();
        metrics.in_flight.inc();
        let _guard = super::RequestGuard;
        let mut run = Run {
            path: self,
            timers,
            attempts: Attempts::new(ex.admitted.target.is_some()),
            ex,
            status: 0,
            target: None,
        };
        let closing = closing || run.ex.client_close;
        let outcome = run.go(client, buf, closing).await;
        let ex = &run.ex;
        answer::record(&answer::Outcome {
            set: Some(&ex.admitted.set),
            status: run.status,
            method: ex.method,
            seconds: ex.started.elapsed().as_secs_f64(),
            ended_session: run.attempts.session_bound() && ex.verb == "DELETE",
        });
        if tracing::enabled!(tracing::Level::DEBUG) {
            tracing::debug!(
                method = ex.verb,
                category = %ex.admitted.set.name,
                status = run.status,
                server = run.target.as_ref().map_or("-", |b| &*b.id),
                attempts = run.attempts.count(),
                "request (fast path)"
            );
        }
        outcome
    }
}

/// One taken request in progress.
struct Run<'a> {
    path: &'a FastPath,
    timers: &'a mut Timers,
    ex: Box<Exchange>,
    attempts: Attempts,
    /// The status the client got (0 when it got none).
    status: u16,
    target: Option<Backend>,
}

/// How relaying an answer ended.
enum Relayed {
    Done(Outcome),
    /// Failed before anything reached the client: the policy decides what it gets.
    Failed(Failure),
}

impl Run<'_> {
    async fn go<C: Client>(&mut self, client: &mut C, buf: &mut Vec<u8>, closing: bool) -> Outcome {
        let set = Arc::clone(&self.ex.admitted.set);
        let proxy = &set.proxy;
        let whole = self.ex.head_len + self.ex.body_len;
        // A large body is not held: what has arrived goes with the head, the rest after it.
        let streamed = self.ex.body_len as u64 > BODY_LIMIT;
        if !streamed && buf.len() < whole {
            let by = || tokio::time::Instant::from_std(self.ex.started) + proxy.body_timeout;
            let read = read_at_least(client, buf, whole);
            match self.timers.client.within(by, read).await {
                Some(Ok(())) => {}
                Some(Err(_)) => return Outcome::Close,
                None => {
                    let unread = take_request(buf, whole);
                    return self.answer(client, &Refusal::body_timeout(), unread).await;
                }
            }
        }
        set.record_request(self.ex.started_ms);

        let fixed = self.ex.upstream_head.len();
        loop {
            let now_ms = if self.attempts.count() == 0 {
                self.ex.started_ms
            } else {
                clock::now_ms()
            };
            let admitted = &self.ex.admitted;
            let picked =
                self.attempts
                    .pick(&set, admitted.target.as_ref(), admitted.hash_key, now_ms);
            let backend = match picked {
                Ok(b) => b,
                Err(refusal) => {
                    let unread = take_request(buf, whole);
                    return self.answer(client, &refusal, unread).await;
                }
            };
            self.target = Some(backend.clone());
            let failure = match self.connect(&set, &backend).await {
                None => Failure::Connect,
                Some((mut upstream, reused)) => {
                    let _in_flight = backend.state.start_request();
                    // The head's fixed part, then what depends on the server, then the body.
                    let request = &mut self.ex.upstream_head;
                    request.truncate(fixed);
                    wire::header(request, b"host", backend.host.as_bytes());
                    request.extend_from_slice(b"\r\n");
                    let in_buf = whole.min(buf.len());
                    match &self.ex.dechunked {
                        Some(body) => request.extend_from_slice(body.framed()),
                        None => request.extend_from_slice(&buf[self.ex.head_len..in_buf]),
                    }
                    let mut sent_at = Instant::now();
                    let write_by = || tokio::time::Instant::from_std(sent_at) + proxy.idle_timeout;
                    let request = &request[self.ex.head_start..];
                    match send(&mut self.timers.upstream, &mut upstream, request, write_by).await {
                        Sent::All => {
                            buf.drain(..in_buf);
                            // Never sent again (a request that reached a server is not
                            // retried), and an event stream holds it for its whole life.
                            self.ex.upstream_head.release();
                            self.ex.dechunked = None;
                            if in_buf < whole {
                                let body_by = tokio::time::Instant::from_std(self.ex.started)
                                    + proxy.body_timeout;
                                let left = whole - in_buf;
                                let uploaded = upload(
                                    self.timers,
                                    client,
                                    &mut upstream,
                                    left,
                                    body_by,
                                    proxy.idle_timeout,
                                )
                                .await;
                                match uploaded {
                                    Ok(()) => sent_at = Instant::now(),
                                    Err(Upload::ClientGone) => return Outcome::Close,
                                    Err(Upload::ClientSlow(unread)) => {
                                        let refusal = Refusal::body_timeout();
                                        return self.answer(client, &refusal, unread).await;
                                    }
                                    Err(Upload::Failed(failure, unread)) => {
                                        let refusal = self.fail(&set, &backend, failure);
                                        return self.answer(client, &refusal, unread).await;
                                    }
                                }
                            }
                            match self
                                .relay(client, buf, upstream, &backend, sent_at, closing)
                                .await
                            {
                                Relayed::Done(outcome) => return outcome,
                                Relayed::Failed(failure) => {
                                    let refusal = self.fail(&set, &backend, failure);
                                    return self.answer(client, &refusal, 0).await;
                                }
                            }
                        }
                        // A reused connection that took nothing: the server had closed it.
                        // A new one that took nothing was reset as it opened: as good as a
                        // refused connect. Either way, nothing of the request reached it.
                        Sent::Nothing if reused => Failure::Stale,
                        Sent::Nothing => Failure::Connect,
                        Sent::Part => Failure::Send,
                        Sent::TimedOut => Failure::Idle,
                    }
                }
            };
            match self.attempts.failed(&set, &backend, failure) {
                Verdict::Retry => continue,
                Verdict::Fail(refusal) => {
                    let unread = take_request(buf, whole);
                    return self.answer(client, &refusal, unread).await;
                }
            }
        }
    }

    /// A pooled or new connection to `backend` (and whether it was pooled); `None` when it could
    /// not be opened within `proxy.connect_timeout`.
    async fn connect(&mut self, set: &UpstreamSet, backend: &Backend) -> Option<(TcpStream, bool)> {
        if let Some(stream) = self.path.pool.take(backend.addr, self.ex.started) {
            return Some((stream, true));
        }
        let connect = TcpStream::connect(backend.addr);
        let connected = self
            .timers
            .upstream
            .within(after(set.proxy.connect_timeout), connect)
            .await;
        let stream = connected?.ok()?;
        let _ = stream.set_nodelay(true);
        Some((stream, false))
    }

    /// Accounts a failure the client can no longer be told about, or whose answer is the
    /// policy's; it never allows a retry (the request has reached the server).
    fn fail(&mut self, set: &UpstreamSet, backend: &Backend, failure: Failure) -> Refusal {
        match self.attempts.failed(set, backend, failure) {
            Verdict::Fail(refusal) => refusal,
            Verdict::Retry => Refusal::upstream_failed(),
        }
    }

    /// Gives the policy's answer and closes, after reading and discarding the `unread` bytes
    /// of the request still to come (within the policy's lingering bounds).
    async fn answer<C: Client>(
        &mut self,
        client: &mut C,
        refusal: &Refusal,
        unread: usize,
    ) -> Outcome {
        refusal.record(Some(&self.ex.admitted.set.name));
        let bytes = wire::answer(refusal);
        let send_timeout = self.ex.admitted.set.proxy.send_timeout;
        if write_all(&mut self.timers.client, client, &bytes, after(send_timeout)).await {
            self.status = refusal.status;
            linger(&mut self.timers.client, client, unread).await;
        }
        Outcome::Close
    }
}
