//! The fast path: MCP `POST`s with a small `Content-Length` body, the bulk of MCP traffic,
//! exchanged in the connection's own task with one parse of each head, one write each way and
//! a pool of idle upstream connections that needs no task per connection.
//!
//! Pingora's proxy spends two to three times nginx's CPU per small request (boxed futures per
//! hook, a channel pair between the two sides, header maps rebuilt, a watcher task per pooled
//! connection); measured in BENCHMARKS.md. Everything else (`GET` event streams, `DELETE`,
//! chunked uploads, `Expect`, `Connection` options, local endpoints, any request a check refuses)
//! goes to Pingora's path untouched: the fast path only takes a request it can see will pass
//! every check there, and hands the bytes it has read back to the connection otherwise.
//! Once a request is taken, its outcomes are those of Pingora's path: the same retries (only
//! when nothing reached a server), passive ejection, timeouts, limits, session-id rewriting,
//! error answers and metrics.

mod chunked;
mod pool;
mod scratch;
mod wire;

use super::origin;
use super::reply::code;
use super::route::{self, Route};
use super::session::{self, SessionCodec};
use crate::upstream::{clock, hash_bytes, Backend, PickRequest, Registry, UpstreamSet};
use chunked::ChunkedBody;
use pingora::protocols::Stream;
use pool::UpstreamPool;
use scratch::Scratch;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest request body the fast path takes (read whole before a server is chosen, as nginx
/// does by default); larger ones stream through Pingora's path.
const BODY_LIMIT: usize = 64 * 1024;
/// Largest request head the fast path parses; a larger one goes to Pingora's path, which
/// applies `proxy.max_header_bytes`.
const HEAD_LIMIT: usize = 16 * 1024;
/// Fields parsed per head; a request with more goes to Pingora's path.
const MAX_FIELDS: usize = 64;
/// Largest answer head accepted from a server.
const ANSWER_HEAD_LIMIT: usize = 64 * 1024;
/// Read size for answers.
const READ_CHUNK: usize = 16 * 1024;

/// What to do with the head at the front of a connection's buffer.
pub enum Plan {
    /// Not all of it has arrived.
    Partial,
    /// Pingora's path takes it.
    Defer,
    Take(Exchange),
}

/// A request the fast path has taken, with everything read from its head.
pub struct Exchange {
    set: Arc<UpstreamSet>,
    head_len: usize,
    body_len: usize,
    /// The head as the server gets it, minus `Host` and the final CRLF (they depend on the
    /// server picked).
    upstream_head: Scratch,
    /// Fixed by the request's session id.
    target: Option<Backend>,
    hash_key: Option<u64>,
    method: &'static str,
}

/// How a taken request ended, for the connection loop.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    KeepAlive,
    Close,
}

pub struct FastPath {
    registry: Arc<Registry>,
    codec: SessionCodec,
    pool: UpstreamPool,
}

enum Framing {
    Empty,
    Length(u64),
    Chunked(ChunkedBody),
    UntilClose,
}

/// No server to try (503), or the connect failed and may not be retried: the answer to give.
struct Failure(u16, i64, String);

fn is(name: &str, lower: &str) -> bool {
    name.len() == lower.len() && name.eq_ignore_ascii_case(lower)
}

impl FastPath {
    pub fn new(registry: Arc<Registry>, codec: SessionCodec) -> Self {
        Self {
            registry,
            codec,
            pool: UpstreamPool::default(),
        }
    }

    /// Decides on the head at the front of `buf`.
    pub fn plan(&self, buf: &[u8]) -> Plan {
        let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
        let mut req = httparse::Request::new(&mut fields);
        let head_len = match req.parse(buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if buf.len() <= HEAD_LIMIT => return Plan::Partial,
            _ => return Plan::Defer,
        };
        if req.method != Some("POST") || req.version != Some(1) {
            return Plan::Defer;
        }
        let Some(target) = req.path else {
            return Plan::Defer;
        };
        let snapshot = self.registry.load();
        let limits = &snapshot.proxy;
        if target.len() > limits.max_uri || req.headers.len() > limits.max_headers {
            return Plan::Defer;
        }
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (target, None),
        };
        let Route::Mcp { category, query } = route::parse(path, query) else {
            return Plan::Defer;
        };
        let Some(set) = snapshot.category(category) else {
            return Plan::Defer;
        };

        let mut length = None;
        let mut host = None;
        let mut token = None;
        let mut hash_key = None;
        let mut method_field = None;
        let mut field_bytes = 0u64;
        let mut upstream_head = Scratch::take(head_len + 128);
        upstream_head.extend_from_slice(b"POST ");
        upstream_head.extend_from_slice(set.mcp_path.as_bytes());
        if let Some(q) = query {
            upstream_head.push(b'?');
            upstream_head.extend_from_slice(q.as_bytes());
        }
        upstream_head.extend_from_slice(b" HTTP/1.1\r\n");
        for f in req.headers.iter() {
            field_bytes += (f.name.len() + f.value.len()) as u64;
            let name = f.name;
            if is(name, "content-length") {
                if length.is_some() {
                    return Plan::Defer;
                }
                match super::content_length(f.value) {
                    Some(n) => length = Some(n),
                    None => return Plan::Defer,
                }
            } else if is(name, "host") {
                if host.is_some() {
                    return Plan::Defer;
                }
                host = Some(f.value);
                continue;
            } else if is(name, super::SESSION_HEADER) {
                if token.is_some() {
                    return Plan::Defer;
                }
                token = Some(f.value);
                continue;
            } else if is(name, "x-forwarded-host") {
                // Replaced by the proxy's own, as on Pingora's path.
                continue;
            } else if is(name, "origin") {
                if !origin::allowed(f.value, &set.proxy.allowed_origins) {
                    return Plan::Defer;
                }
            } else if is(name, "mcp-method") {
                method_field = Some(f.value);
            } else if is(name, "transfer-encoding")
                || is(name, "expect")
                || is(name, "connection")
                || is(name, "upgrade")
                || is(name, "te")
                || is(name, "keep-alive")
                || is(name, "proxy-connection")
            {
                return Plan::Defer;
            }
            if let Some(h) = &set.hash_header {
                if is(name, h.as_str()) {
                    hash_key = Some(hash_bytes(f.value));
                }
            }
            wire::header(&mut upstream_head, name.as_bytes(), f.value);
        }
        if field_bytes > limits.max_header_bytes {
            return Plan::Defer;
        }
        let Some(body_len) = length else {
            return Plan::Defer;
        };
        if body_len > set.proxy.max_body || body_len > BODY_LIMIT as u64 {
            return Plan::Defer;
        }
        if let Some(host) = host {
            wire::header(&mut upstream_head, b"x-forwarded-host", host);
        }
        let mut target = None;
        if let Some(token) = token {
            let mut scratch = session::decode_buffer();
            let Ok(route) = self.codec.decode(&set.name, token, &mut scratch) else {
                return Plan::Defer;
            };
            let Some(backend) = set.session_target(&route.backend, clock::now_ms()) else {
                return Plan::Defer;
            };
            wire::header(
                &mut upstream_head,
                super::SESSION_HEADER.as_bytes(),
                route.inner,
            );
            target = Some(backend.clone());
        } else if set.ready_count() == 0 {
            return Plan::Defer;
        }
        Plan::Take(Exchange {
            set: Arc::clone(set),
            head_len,
            body_len: body_len as usize,
            upstream_head,
            target,
            hash_key,
            method: crate::metrics::method_label(method_field),
        })
    }

    /// Carries out a taken request on `client`, whose buffer `buf` holds its head (and perhaps
    /// more); the request's bytes are removed from `buf` whatever happens.
    pub async fn exchange(
        &self,
        client: &mut Stream,
        buf: &mut Vec<u8>,
        ex: Exchange,
        closing: bool,
    ) -> Outcome {
        let metrics = crate::metrics::metrics();
        metrics.fast_path.inc();
        metrics.in_flight.inc();
        let _guard = super::RequestGuard;
        let started = Instant::now();
        let mut run = Run {
            path: self,
            ex,
            started,
            status: 0,
            target: None,
            attempts: 0,
        };
        let outcome = run.go(client, buf, closing).await;
        let ex = &run.ex;
        ex.set
            .record_answer(run.status, ex.method, started.elapsed().as_secs_f64());
        if tracing::enabled!(tracing::Level::DEBUG) {
            tracing::debug!(
                method = "POST",
                category = %ex.set.name,
                status = run.status,
                server = run.target.as_ref().map_or("-", |b| &*b.id),
                attempts = run.attempts,
                "request (fast path)"
            );
        }
        outcome
    }
}

/// One taken request in progress.
struct Run<'a> {
    path: &'a FastPath,
    ex: Exchange,
    started: Instant,
    /// The status the client got (0 when it got none).
    status: u16,
    target: Option<Backend>,
    attempts: usize,
}

impl Run<'_> {
    async fn go(&mut self, client: &mut Stream, buf: &mut Vec<u8>, closing: bool) -> Outcome {
        let set = Arc::clone(&self.ex.set);
        let proxy = &set.proxy;
        let whole = self.ex.head_len + self.ex.body_len;
        if buf.len() < whole {
            let deadline = tokio::time::Instant::from_std(self.started) + proxy.body_timeout;
            match tokio::time::timeout_at(deadline, read_at_least(client, buf, whole)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Outcome::Close,
                Err(_) => {
                    return self
                        .answer_error(
                            client,
                            408,
                            code::BAD_REQUEST,
                            "request body not received within body_timeout",
                        )
                        .await;
                }
            }
        }
        set.record_request(clock::ms_at(self.started));

        let mut last_failed: Option<SocketAddr> = None;
        let fixed = self.ex.upstream_head.len();
        loop {
            let (mut upstream, backend, reused) = match self.connect(&set, &mut last_failed).await {
                Ok(c) => c,
                Err(Failure(status, rpc, message)) => {
                    buf.drain(..whole);
                    return self.answer_error(client, status, rpc, &message).await;
                }
            };
            let _in_flight = backend.state.start_request();
            self.target = Some(backend.clone());

            // The head's fixed part, then what depends on the server, then the body.
            let request = &mut self.ex.upstream_head;
            request.truncate(fixed);
            wire::header(request, b"host", backend.host.as_bytes());
            request.extend_from_slice(b"\r\n");
            request.extend_from_slice(&buf[self.ex.head_len..whole]);
            let sent_at = Instant::now();
            let write_by = tokio::time::Instant::from_std(sent_at) + proxy.idle_timeout;
            let sent = tokio::time::timeout_at(write_by, upstream.write_all(request)).await;
            if !matches!(sent, Ok(Ok(()))) {
                // Not all of it reached the server, so it cannot have acted on it. A pooled
                // connection the server had closed is no fault of the server's; a dead server
                // shows up as a refused connect on the next attempt.
                if !reused {
                    self.passive_failure(&backend);
                }
                last_failed = Some(backend.addr);
                if reused && self.may_retry() {
                    crate::metrics::retry(&set.name, "reused-connection");
                    continue;
                }
                buf.drain(..whole);
                return self
                    .answer_error(client, 502, code::UPSTREAM_FAILED, "upstream server failed")
                    .await;
            }
            buf.drain(..whole);
            return self
                .relay(client, buf, upstream, &backend, sent_at, closing)
                .await;
        }
    }

    /// A pooled or new connection to a server of the category (or the session's server).
    async fn connect(
        &mut self,
        set: &UpstreamSet,
        last_failed: &mut Option<SocketAddr>,
    ) -> Result<(TcpStream, Backend, bool), Failure> {
        loop {
            self.attempts += 1;
            let backend = match &self.ex.target {
                Some(b) => Some(b.clone()),
                None => set
                    .pick(&PickRequest {
                        key: self.ex.hash_key,
                        avoid: *last_failed,
                        now_ms: if self.attempts == 1 {
                            clock::ms_at(self.started)
                        } else {
                            clock::now_ms()
                        },
                    })
                    .cloned(),
            };
            let Some(backend) = backend else {
                return Err(Failure(
                    503,
                    code::UNAVAILABLE,
                    "no ready server in the category".into(),
                ));
            };
            if let Some(stream) = self.path.pool.take(backend.addr, self.started) {
                return Ok((stream, backend, true));
            }
            let connected =
                tokio::time::timeout(set.proxy.connect_timeout, TcpStream::connect(backend.addr))
                    .await;
            if let Ok(Ok(stream)) = connected {
                let _ = stream.set_nodelay(true);
                return Ok((stream, backend, false));
            }
            backend.state.record_connect_failure();
            *last_failed = Some(backend.addr);
            self.passive_failure(&backend);
            if self.may_retry() {
                crate::metrics::retry(&set.name, "connect");
                continue;
            }
            self.target = Some(backend);
            return Err(if self.ex.target.is_some() {
                Failure(
                    404,
                    code::SESSION_NOT_FOUND,
                    super::session_not_found("its server does not answer"),
                )
            } else {
                Failure(
                    502,
                    code::UPSTREAM_FAILED,
                    "upstream server refused the connection; retries exhausted".into(),
                )
            });
        }
    }

    fn may_retry(&self) -> bool {
        let set = &self.ex.set;
        self.ex.target.is_none()
            && self.attempts <= set.proxy.max_retries
            && set.try_retry(clock::now_ms(), &set.proxy.retry_budget)
    }

    fn passive_failure(&self, backend: &Backend) {
        let set = &self.ex.set;
        backend.state.record_failure();
        if let Some(span) = set.try_eject(backend, clock::now_ms(), &set.proxy.ejection) {
            tracing::info!(server = %backend.id, ejected_for = ?span, "ejected after a failed request");
        }
    }

    async fn answer_error(
        &mut self,
        client: &mut Stream,
        status: u16,
        rpc: i64,
        message: &str,
    ) -> Outcome {
        let answer = wire::error_answer(status, rpc, message);
        if write_all(client, &answer, deadline(self.ex.set.proxy.send_timeout)).await {
            self.status = status;
        }
        Outcome::Close
    }

    /// Reads the server's answer and passes it on as it arrives.
    async fn relay(
        &mut self,
        client: &mut Stream,
        pipelined: &mut Vec<u8>,
        mut upstream: TcpStream,
        backend: &Backend,
        sent_at: Instant,
        closing: bool,
    ) -> Outcome {
        let set = Arc::clone(&self.ex.set);
        let proxy = &set.proxy;
        let first_byte = proxy.first_byte_timeout.min(proxy.idle_timeout);
        let head_deadline = tokio::time::Instant::from_std(sent_at) + first_byte;
        let mut resp = Scratch::take(READ_CHUNK);
        let mut down = Scratch::take(1024);

        // The head (after any 1xx heads, which are passed on as they come).
        // Bytes left over after a 1xx head may already hold the next head: parse before reading.
        let mut need_more = true;
        let (head_len, answer, head_at) = loop {
            if need_more {
                let read = tokio::time::timeout_at(
                    head_deadline,
                    read_watching(&mut upstream, &mut resp, client, pipelined),
                )
                .await;
                let failure = match read {
                    Ok(Err(ClientGone)) => return Outcome::Close,
                    Err(_) => Some((
                        504,
                        code::TIMEOUT,
                        format!("upstream server sent no answer within {first_byte:?}"),
                    )),
                    Ok(Ok(Ok(0))) | Ok(Ok(Err(_))) => {
                        Some((502, code::UPSTREAM_FAILED, "upstream server failed".into()))
                    }
                    Ok(Ok(Ok(_))) => None,
                };
                if let Some((status, rpc, message)) = failure {
                    self.passive_failure(backend);
                    return self.answer_error(client, status, rpc, &message).await;
                }
            }
            let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
            let mut head = httparse::Response::new(&mut fields);
            let parsed = match head.parse(&resp) {
                Ok(httparse::Status::Complete(n)) => Some(n),
                Ok(httparse::Status::Partial) if resp.len() <= ANSWER_HEAD_LIMIT => None,
                _ => {
                    self.passive_failure(backend);
                    return self
                        .answer_error(client, 502, code::UPSTREAM_FAILED, "upstream server failed")
                        .await;
                }
            };
            let Some(n) = parsed else {
                need_more = true;
                continue;
            };
            let status = head.code.unwrap_or(0);
            if (100..200).contains(&status) && status != 101 {
                if !write_all(client, &resp[..n], deadline(proxy.send_timeout)).await {
                    return Outcome::Close;
                }
                resp.drain(..n);
                need_more = resp.is_empty();
                continue;
            }
            let now = Instant::now();
            match self.answer_head(&head, backend, now - sent_at, now, closing, &mut down) {
                Ok(answer) => break (n, answer, now),
                Err((status, message)) => {
                    self.passive_failure(backend);
                    return self
                        .answer_error(client, status, code::UPSTREAM_FAILED, message)
                        .await;
                }
            }
        };
        let AnswerHead {
            status,
            mut framing,
            event_stream,
            keep_upstream,
            mut keep_client,
        } = answer;

        // The head goes out with whatever of the body came with it.
        let limit = (!event_stream).then_some(proxy.max_response_body);
        let mut passed = 0u64;
        let mut pending = &resp[head_len..];
        let mut complete = take_body(&mut framing, &mut pending, &mut down, &mut passed);
        let mut clean = complete.is_ok() && pending.is_empty();
        let write_by = tokio::time::Instant::from_std(head_at) + proxy.send_timeout;
        if !write_all(client, &down, write_by).await {
            return Outcome::Close;
        }
        self.status = status;
        loop {
            match complete {
                Ok(true) => break,
                Ok(false) => {}
                Err(()) => {
                    // The server broke the framing: the client must not take a cut answer
                    // for a whole one, so its connection is closed too.
                    self.passive_failure(backend);
                    return Outcome::Close;
                }
            }
            if limit.is_some_and(|l| passed > l) {
                crate::metrics::refused("max_response_body");
                self.passive_failure(backend);
                return Outcome::Close;
            }
            resp.clear();
            let read = tokio::time::timeout(
                proxy.idle_timeout,
                read_watching(&mut upstream, &mut resp, client, pipelined),
            )
            .await;
            match read {
                Ok(Err(ClientGone)) => return Outcome::Close,
                Ok(Ok(Ok(0))) => {
                    if matches!(framing, Framing::UntilClose) {
                        keep_client = false;
                        break;
                    }
                    self.passive_failure(backend);
                    return Outcome::Close;
                }
                Ok(Ok(Ok(_))) => {}
                _ => {
                    self.passive_failure(backend);
                    return Outcome::Close;
                }
            }
            down.clear();
            let mut pending = &resp[..];
            complete = take_body(&mut framing, &mut pending, &mut down, &mut passed);
            clean = complete.is_ok() && pending.is_empty();
            if !write_all(client, &down, deadline(proxy.send_timeout)).await {
                return Outcome::Close;
            }
        }
        if limit.is_some_and(|l| passed > l) {
            crate::metrics::refused("max_response_body");
            self.passive_failure(backend);
        }
        if keep_upstream && clean {
            self.path
                .pool
                .put(backend.addr, upstream, proxy.upstream_keepalive, head_at);
        }
        if keep_client {
            Outcome::KeepAlive
        } else {
            Outcome::Close
        }
    }

    /// Checks the answer's head, records what it says about the server and writes the head the
    /// client gets into `down`.
    fn answer_head(
        &mut self,
        head: &httparse::Response,
        backend: &Backend,
        latency: Duration,
        now: Instant,
        closing: bool,
        down: &mut Vec<u8>,
    ) -> Result<AnswerHead, (u16, &'static str)> {
        let set = &self.ex.set;
        let status = head.code.unwrap_or(0);
        if status == 101 || status < 100 {
            return Err((502, "upstream server failed"));
        }
        let mut length = None;
        let mut chunked = false;
        let mut event_stream = false;
        let mut server_closes = head.version != Some(1);
        for f in head.headers.iter() {
            if is(f.name, "content-length") {
                match (length, super::content_length(f.value)) {
                    (None, Some(n)) => length = Some(n),
                    _ => return Err((502, "upstream server failed")),
                }
            } else if is(f.name, "transfer-encoding") {
                if chunked || !f.value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                    return Err((502, "upstream server failed"));
                }
                chunked = true;
            } else if is(f.name, "content-type") {
                event_stream = f.value.starts_with(b"text/event-stream");
            } else if is(f.name, "connection") {
                server_closes |= wire::says_close(f.value);
            }
        }
        let framing = if status == 204 || status == 304 {
            Framing::Empty
        } else if chunked {
            Framing::Chunked(ChunkedBody::default())
        } else if let Some(n) = length {
            Framing::Length(n)
        } else {
            Framing::UntilClose
        };
        if let (false, Framing::Length(n)) = (event_stream, &framing) {
            if *n > set.proxy.max_response_body {
                crate::metrics::refused("max_response_body");
                return Err((502, "upstream answer larger than proxy.max_response_body"));
            }
        }
        let now = clock::ms_at(now);
        backend.state.observe_latency(latency, now);
        if backend
            .state
            .record_status(status, now, &set.proxy.ejection)
        {
            if let Some(span) = set.try_eject(backend, now, &set.proxy.ejection) {
                tracing::info!(server = %backend.id, ejected_for = ?span, "ejected after a run of 5xx answers");
            }
        }

        let until_close = matches!(framing, Framing::UntilClose);
        let keep_client = !closing && !until_close;
        down.clear();
        wire::status_line(down, status, head.reason);
        for f in head.headers.iter() {
            if wire::hop_by_hop(f.name) || (chunked && is(f.name, "content-length")) {
                continue;
            }
            if is(f.name, super::SESSION_HEADER) {
                match self.path.codec.encode(&set.name, backend.addr, f.value) {
                    Ok(token) => {
                        crate::metrics::session_created(&set.name);
                        wire::header(down, f.name.as_bytes(), token.as_bytes());
                    }
                    Err(e) => {
                        tracing::warn!(server = %backend.id, error = %e, "dropping a session id the server minted");
                    }
                }
                continue;
            }
            wire::header(down, f.name.as_bytes(), f.value);
        }
        if event_stream {
            // Tell any buffering hop downstream (nginx in front of us, say) to pass events on.
            wire::header(down, b"x-accel-buffering", b"no");
        }
        if !keep_client {
            wire::header(down, b"connection", b"close");
        }
        down.extend_from_slice(b"\r\n");
        Ok(AnswerHead {
            status,
            framing,
            event_stream,
            keep_upstream: !server_closes && !until_close,
            keep_client,
        })
    }
}

/// What the answer's head says.
struct AnswerHead {
    status: u16,
    framing: Framing,
    event_stream: bool,
    /// The server's connection may carry another request after this answer.
    keep_upstream: bool,
    /// The client's connection may.
    keep_client: bool,
}

/// Moves the part of `pending` that belongs to the body into `down`. Ok(true) when the body is
/// complete, Err(()) when the server broke its framing. `passed` counts payload bytes.
fn take_body(
    framing: &mut Framing,
    pending: &mut &[u8],
    down: &mut Vec<u8>,
    passed: &mut u64,
) -> Result<bool, ()> {
    match framing {
        Framing::Empty => Ok(true),
        Framing::Length(left) => {
            let n = pending
                .len()
                .min(usize::try_from(*left).unwrap_or(usize::MAX));
            down.extend_from_slice(&pending[..n]);
            *pending = &pending[n..];
            *left -= n as u64;
            *passed += n as u64;
            Ok(*left == 0)
        }
        Framing::Chunked(c) => {
            let n = c.feed(pending).map_err(|_| ())?;
            down.extend_from_slice(&pending[..n]);
            *pending = &pending[n..];
            *passed = c.data_len();
            Ok(c.done())
        }
        Framing::UntilClose => {
            down.extend_from_slice(pending);
            *passed += pending.len() as u64;
            *pending = &[];
            Ok(false)
        }
    }
}

/// Reads until `buf` holds at least `want` bytes.
async fn read_at_least(client: &mut Stream, buf: &mut Vec<u8>, want: usize) -> std::io::Result<()> {
    while buf.len() < want {
        buf.reserve(want - buf.len());
        if client.read_buf(buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(())
}

/// The client hung up while its answer was awaited.
struct ClientGone;

/// Client bytes kept while an answer is awaited (a pipelined request); past this the client is
/// not read (and not watched) until the answer is out.
const PIPELINE_LIMIT: usize = 64 * 1024;

/// Reads the server's next bytes while watching the client. A client that hangs up cancels its
/// request (the MCP rule; Pingora's path does the same), so the exchange ends at once and the
/// server sees its connection close, instead of working on until the answer finds nobody.
/// Bytes the client sends meanwhile are kept in `pipelined`, the connection's buffer.
async fn read_watching(
    upstream: &mut TcpStream,
    resp: &mut Vec<u8>,
    client: &mut Stream,
    pipelined: &mut Vec<u8>,
) -> Result<std::io::Result<usize>, ClientGone> {
    loop {
        let watch = pipelined.len() < PIPELINE_LIMIT;
        if watch {
            pipelined.reserve(1024);
        }
        tokio::select! {
            biased;
            read = read_some(upstream, resp) => return Ok(read),
            got = client.read_buf(pipelined), if watch => match got {
                Ok(0) | Err(_) => return Err(ClientGone),
                Ok(_) => {}
            },
        }
    }
}

async fn read_some(upstream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    buf.reserve(READ_CHUNK);
    upstream.read_buf(buf).await
}

fn deadline(after: Duration) -> tokio::time::Instant {
    tokio::time::Instant::now() + after
}

/// Writes and flushes by `deadline`; false when the client is gone or too slow.
async fn write_all(client: &mut Stream, bytes: &[u8], deadline: tokio::time::Instant) -> bool {
    if bytes.is_empty() {
        return true;
    }
    let write = async {
        client.write_all(bytes).await?;
        client.flush().await
    };
    matches!(tokio::time::timeout_at(deadline, write).await, Ok(Ok(())))
}
