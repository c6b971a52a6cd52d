//! The `ProxyHttp` implementation: routing `/mcp/{category}`, stateless session affinity, load
//! balancing through the category's strategy, passive ejection, budgeted retries of requests that
//! cannot have reached a server, timeouts, and the local `/health` and `/stats` answers.
//!
//! The proxy knows upstream sets and nothing of processes: servers appear and vanish in the
//! registry snapshot it loads once per request.

pub mod fast_path;
pub mod gate;
pub mod origin;
pub mod reply;
pub mod route;
pub mod session;

use crate::upstream::{clock, hash_bytes, Backend, InFlight, PickRequest, Registry, UpstreamSet};
use async_trait::async_trait;
use bytes::Bytes;
use gate::RequestClock;
use http::{HeaderValue, Method};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::{HttpPeer, ProxyHttp, Session};
use pingora::proxy::FailToProxy;
use pingora::{Error, ErrorType, Result};
use reply::code;
use route::Route;
use session::{SessionCodec, SessionError};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SESSION_HEADER: &str = "mcp-session-id";

/// Requests in progress across all worker threads, and whether the instance is shutting down.
/// Shared with the process lifecycle so SIGTERM can wait for the count to reach zero.
/// The in-flight count is the `mcp_fleet_in_flight_requests` gauge itself: one atomic serves
/// the drain and the metric.
#[derive(Debug, Default)]
pub struct Traffic {
    draining: AtomicBool,
}

impl Traffic {
    pub fn in_flight(&self) -> usize {
        crate::metrics::metrics().in_flight.get().max(0) as usize
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }
}

/// Held by a request's context for its whole life.
#[derive(Debug)]
pub struct RequestGuard;

impl Drop for RequestGuard {
    fn drop(&mut self) {
        crate::metrics::metrics().in_flight.dec();
    }
}

/// Standalone event streams (MCP `GET`) open now, across worker threads.
static SSE_OPEN: AtomicUsize = AtomicUsize::new(0);

/// A place among `proxy.max_sse_streams`, held by a `GET` request for its whole life.
#[derive(Debug)]
pub struct SseSlot;

impl SseSlot {
    fn take(limit: usize) -> Option<Self> {
        let before = SSE_OPEN.fetch_add(1, Ordering::AcqRel);
        if before >= limit {
            SSE_OPEN.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        crate::metrics::metrics().sse_streams.inc();
        Some(SseSlot)
    }
}

impl Drop for SseSlot {
    fn drop(&mut self) {
        SSE_OPEN.fetch_sub(1, Ordering::AcqRel);
        crate::metrics::metrics().sse_streams.dec();
    }
}

/// Request framing a proxy must refuse rather than guess at (RFC 9112 section 6.3): a body
/// length given twice or both ways is how requests are smuggled past one hop to the next.
fn ambiguous_framing(headers: &http::HeaderMap) -> Option<&'static str> {
    let mut lengths = headers.get_all(http::header::CONTENT_LENGTH).iter();
    let first = lengths.next();
    if first.is_some_and(|v| content_length(v.as_bytes()).is_none()) {
        return Some("Content-Length is not a number");
    }
    if lengths.next().is_some() {
        return Some("more than one Content-Length");
    }
    let mut codings = headers.get_all(http::header::TRANSFER_ENCODING).iter();
    if let Some(te) = codings.next() {
        if first.is_some() {
            return Some("both Content-Length and Transfer-Encoding");
        }
        if codings.next().is_some() || !te.as_bytes().eq_ignore_ascii_case(b"chunked") {
            return Some("Transfer-Encoding other than a single chunked");
        }
    }
    None
}

/// A single decimal Content-Length value (no sign, no spaces inside, no list): the one reading
/// of the field on both paths, so they agree on what is a valid length.
fn content_length(value: &[u8]) -> Option<u64> {
    let value = value.trim_ascii();
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// A message's declared body length, if it declares a valid one.
fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| content_length(v.as_bytes()))
}

/// Pingora drops `Content-Length` when `Transfer-Encoding` is present (RFC 9112 lets a server
/// do that); a proxy should refuse such a request instead, so look at the head as it arrived.
fn raw_head_has_content_length(session: &Session) -> bool {
    session.as_downstream().as_http1().is_some_and(|h1| {
        h1.get_headers_raw_bytes()
            .split(|&b| b == b'\n')
            .skip(1)
            .any(|line| line.len() > 15 && line[..15].eq_ignore_ascii_case(b"content-length:"))
    })
}

/// Largest chunked request body read whole before a server is chosen (Pingora's replay buffer).
const CHUNKED_BODY_LIMIT: usize = 64 * 1024;

enum Preread {
    Complete,
    TooLarge,
    Malformed,
    TimedOut,
}

/// Reads a chunked request body whole, into Pingora's replay buffer, so that broken chunk
/// framing is answered here and nothing of the request reaches a server.
async fn preread_chunked(session: &mut Session, limit: Duration) -> Preread {
    session.as_downstream_mut().enable_retry_buffering();
    let read = tokio::time::timeout(limit, async {
        let mut total = 0usize;
        loop {
            match session.read_request_body().await {
                Ok(Some(chunk)) => {
                    total += chunk.len();
                    if total > CHUNKED_BODY_LIMIT {
                        return Preread::TooLarge;
                    }
                }
                Ok(None) => return Preread::Complete,
                Err(_) => return Preread::Malformed,
            }
        }
    })
    .await;
    read.unwrap_or(Preread::TimedOut)
}

/// The proxy. Timeouts, retries and ejection rules come from the category's snapshot
/// (`UpstreamSet::proxy`), so a reload changes them for the next request.
pub struct FleetProxy {
    registry: Arc<Registry>,
    codec: SessionCodec,
    traffic: Arc<Traffic>,
}

impl FleetProxy {
    pub fn new(registry: Arc<Registry>, codec: SessionCodec, traffic: Arc<Traffic>) -> Self {
        Self {
            registry,
            codec,
            traffic,
        }
    }

    /// A connection-level failure of `ctx.target` (refused, reset, timed out): count it and
    /// eject the server if the category can spare it.
    fn passive_failure(&self, ctx: &mut RequestCtx) {
        if ctx.failure_recorded {
            return;
        }
        ctx.failure_recorded = true;
        if let (Some(set), Some(target)) = (&ctx.set, &ctx.target) {
            target.state.record_failure();
            if let Some(span) = set.try_eject(target, clock::now_ms(), &set.proxy.ejection) {
                tracing::info!(server = %target.id, ejected_for = ?span, "ejected after a failed request");
            }
        }
    }

    /// An answer over `proxy.max_response_body`: a faulty server, counted like a failed request.
    fn response_too_large(&self, ctx: &mut RequestCtx) -> Box<Error> {
        ctx.response_too_large = true;
        crate::metrics::refused("max_response_body");
        self.passive_failure(ctx);
        Error::explain(
            ErrorType::HTTPStatus(502),
            "upstream answer larger than proxy.max_response_body",
        )
    }

    /// Whether a request that failed before reaching a server may go to another one.
    fn may_retry(&self, ctx: &RequestCtx) -> bool {
        !ctx.session_bound
            && ctx.set.as_ref().is_some_and(|s| {
                ctx.attempts <= s.proxy.max_retries
                    && s.try_retry(clock::now_ms(), &s.proxy.retry_budget)
            })
    }
}

impl RequestCtx {
    /// Disarms the first-byte wait (the attempt is over) and says whether it had expired.
    fn first_byte_fired(&mut self) -> bool {
        self.awaiting_head_on = None;
        self.clock.as_ref().is_some_and(|c| {
            c.disarm_first_byte();
            c.first_byte_fired()
        })
    }
}

/// Per-request state, shared across the hooks of one request (and its retries).
#[derive(Default)]
pub struct RequestCtx {
    guard: Option<RequestGuard>,
    set: Option<Arc<UpstreamSet>>,
    /// Fixed by a session id; otherwise chosen by the strategy in `upstream_peer`.
    target: Option<Backend>,
    session_bound: bool,
    /// The server's own session id, sent upstream in place of the client's token.
    inner_session: Option<HeaderValue>,
    query: Option<Box<str>>,
    in_flight: Option<InFlight>,
    attempts: usize,
    last_failed: Option<SocketAddr>,
    connect_failed: bool,
    /// Hash of the category's consistent-hash header, when present.
    hash_key: Option<u64>,
    started: Option<Instant>,
    /// When the request was handed to the current upstream connection.
    sent_at: Option<Instant>,
    /// Deadlines shared with the gate (the first-byte wait is armed and disarmed through it).
    clock: Option<Arc<RequestClock>>,
    /// The upstream connection while its answer's head is awaited (the first-byte wait is
    /// re-armed from here as the request body streams out).
    awaiting_head_on: Option<std::os::fd::RawFd>,
    first_byte_timed_out: bool,
    retry_refused: bool,
    failure_recorded: bool,
    /// An MCP request (not a local endpoint): counted in the request metrics.
    counted: bool,
    body_bytes: u64,
    sse_slot: Option<SseSlot>,
    /// The answer is `text/event-stream` (set when its head arrives).
    event_stream: bool,
    /// Bytes of an answer that is not an event stream, bounded by `proxy.max_response_body`.
    response_bytes: u64,
    response_limited: bool,
    response_too_large: bool,
}

async fn respond(
    session: &mut Session,
    status: u16,
    body: Vec<u8>,
    extra: &[(&'static str, &'static str)],
) -> Result<bool> {
    let mut resp = ResponseHeader::build(status, Some(3 + extra.len()))?;
    resp.insert_header("content-type", "application/json")?;
    resp.insert_header("content-length", body.len())?;
    resp.insert_header("cache-control", "no-store")?;
    for (name, value) in extra {
        resp.insert_header(*name, *value)?;
    }
    session.write_response_header(Box::new(resp), false).await?;
    session
        .write_response_body(Some(Bytes::from(body)), true)
        .await?;
    Ok(true)
}

async fn respond_rpc_error(
    session: &mut Session,
    status: u16,
    code: i64,
    message: &str,
    data: Option<serde_json::Value>,
) -> Result<bool> {
    let extra: &[(&str, &str)] = if status == 503 {
        &[("retry-after", "1")]
    } else if status == 405 {
        &[("allow", "GET, POST, DELETE")]
    } else {
        &[]
    };
    respond(
        session,
        status,
        reply::jsonrpc_error(code, message, data),
        extra,
    )
    .await
}

fn session_not_found(reason: &str) -> String {
    format!("session not found ({reason}): initialize a new session")
}

#[async_trait]
impl ProxyHttp for FleetProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::default()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        crate::metrics::metrics().in_flight.inc();
        ctx.guard = Some(RequestGuard);
        ctx.started = Some(Instant::now());

        let snapshot = self.registry.load();
        let limits = Arc::clone(&snapshot.proxy);
        let headers = &session.req_header().headers;
        let header_bytes: usize = headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len())
            .sum();
        if headers.len() > limits.max_headers || header_bytes as u64 > limits.max_header_bytes {
            ctx.counted = true;
            session.set_keepalive(None);
            return respond_rpc_error(
                session,
                431,
                code::BAD_REQUEST,
                "request headers too many or too large (proxy.max_headers, proxy.max_header_bytes)",
                None,
            )
            .await;
        }
        let framing = ambiguous_framing(&session.req_header().headers).or_else(|| {
            (session
                .req_header()
                .headers
                .contains_key(http::header::TRANSFER_ENCODING)
                && raw_head_has_content_length(session))
            .then_some("both Content-Length and Transfer-Encoding")
        });
        if let Some(why) = framing {
            ctx.counted = true;
            session.set_keepalive(None);
            return respond_rpc_error(
                session,
                400,
                code::BAD_REQUEST,
                &format!("bad request framing: {why}"),
                None,
            )
            .await;
        }
        let uri = &session.req_header().uri;
        if uri.path_and_query().map_or(0, |p| p.as_str().len()) > limits.max_uri {
            ctx.counted = true;
            return respond_rpc_error(
                session,
                414,
                code::BAD_REQUEST,
                "request URI longer than proxy.max_uri",
                None,
            )
            .await;
        }
        let route = route::parse(uri.path(), uri.query());
        let (category, query) = match route {
            Route::Health => {
                let (status, body) =
                    reply::health(&snapshot, self.traffic.draining(), &self.registry.labels());
                return respond(session, status, body, &[]).await;
            }
            Route::Stats => return respond(session, 200, reply::stats(&snapshot), &[]).await,
            Route::NotFound => {
                return respond_rpc_error(
                    session,
                    404,
                    code::NO_ROUTE,
                    "no such endpoint: MCP is served on /mcp/{category}",
                    Some(reply::categories(&snapshot)),
                )
                .await
            }
            Route::Mcp { category, query } => (category, query),
        };
        ctx.counted = true;
        let Some(set) = snapshot.category(category) else {
            let message = format!("unknown category; known categories: {}", snapshot.known);
            return respond_rpc_error(
                session,
                404,
                code::NO_ROUTE,
                &message,
                Some(reply::categories(&snapshot)),
            )
            .await;
        };
        let set = Arc::clone(set);
        ctx.query = query.map(Into::into);
        ctx.set = Some(Arc::clone(&set));

        if let Some(origin) = session.req_header().headers.get(http::header::ORIGIN) {
            if !origin::allowed(origin.as_bytes(), &set.proxy.allowed_origins) {
                return respond_rpc_error(
                    session,
                    403,
                    code::BAD_REQUEST,
                    "Origin not allowed (proxy.allowed_origins)",
                    None,
                )
                .await;
            }
        }
        if declared_length(&session.req_header().headers).is_some_and(|n| n > set.proxy.max_body) {
            session.set_keepalive(None);
            return respond_rpc_error(
                session,
                413,
                code::BAD_REQUEST,
                "request body larger than proxy.max_body",
                None,
            )
            .await;
        }

        let method = &session.req_header().method;
        if !(method == Method::POST || method == Method::GET || method == Method::DELETE) {
            return respond_rpc_error(
                session,
                405,
                code::BAD_REQUEST,
                "method not allowed: MCP uses POST, GET and DELETE",
                None,
            )
            .await;
        }

        let now = clock::now_ms();
        if let Some(token) = session.req_header().headers.get(SESSION_HEADER) {
            let mut buf = session::decode_buffer();
            let decoded = self
                .codec
                .decode(&set.name, token.as_bytes(), &mut buf)
                .map_err(|e| match e {
                    SessionError::Forged => "not issued by this fleet",
                    SessionError::Malformed | SessionError::BadInner => "malformed",
                })
                .and_then(|r| {
                    let backend = set
                        .session_target(&r.backend, now)
                        .ok_or("its server is gone, unhealthy or ejected")?;
                    let inner = HeaderValue::from_bytes(r.inner).map_err(|_| "malformed")?;
                    Ok((backend.clone(), inner))
                });
            match decoded {
                Ok((backend, inner)) => {
                    ctx.target = Some(backend);
                    ctx.inner_session = Some(inner);
                    ctx.session_bound = true;
                }
                Err(reason) => {
                    crate::metrics::session_not_found(&set.name);
                    return respond_rpc_error(
                        session,
                        404,
                        code::SESSION_NOT_FOUND,
                        &session_not_found(reason),
                        None,
                    )
                    .await;
                }
            }
        } else if set.ready_count() == 0 {
            let message = format!("no server of category {} is ready", set.name);
            return respond_rpc_error(session, 503, code::UNAVAILABLE, &message, None).await;
        }
        if session.req_header().method == Method::GET {
            match SseSlot::take(set.proxy.max_sse_streams) {
                Some(slot) => ctx.sse_slot = Some(slot),
                None => {
                    crate::metrics::refused("max_sse_streams");
                    return respond_rpc_error(
                        session,
                        503,
                        code::UNAVAILABLE,
                        "too many open event streams (proxy.max_sse_streams)",
                        None,
                    )
                    .await;
                }
            }
        }
        if session
            .req_header()
            .headers
            .contains_key(http::header::TRANSFER_ENCODING)
        {
            let refusal = match preread_chunked(session, set.proxy.body_timeout).await {
                Preread::Complete => None,
                Preread::TooLarge => Some((
                    413,
                    "chunked request bodies are limited to 64 KiB: send larger ones with Content-Length",
                )),
                Preread::Malformed => Some((400, "bad request framing: malformed chunked body")),
                Preread::TimedOut => Some((408, "request body not received within body_timeout")),
            };
            if let Some((status, message)) = refusal {
                session.set_keepalive(None);
                return respond_rpc_error(session, status, code::BAD_REQUEST, message, None).await;
            }
        }
        if let Some(header) = &set.hash_header {
            ctx.hash_key = session
                .req_header()
                .headers
                .get(header)
                .map(|v| hash_bytes(v.as_bytes()));
        }
        // A client that stalls while sending its body is cut off after body_timeout, and one
        // that stops reading its answer after send_timeout (the buffers between hold a few
        // hundred KiB per stream until then).
        let downstream = session.as_downstream_mut();
        downstream.set_read_timeout(Some(set.proxy.body_timeout));
        downstream.set_write_timeout(Some(set.proxy.send_timeout));
        set.record_request(now);
        Ok(false)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        ctx.attempts += 1;
        let backend = if ctx.session_bound {
            ctx.target.clone()
        } else {
            let set = ctx
                .set
                .as_ref()
                .ok_or_else(|| Error::explain(ErrorType::InternalError, "no upstream set"))?;
            let req = PickRequest {
                key: ctx.hash_key,
                avoid: ctx.last_failed,
                now_ms: clock::now_ms(),
            };
            set.pick(&req).cloned()
        };
        let Some(backend) = backend else {
            return Err(Error::explain(
                ErrorType::HTTPStatus(503),
                "no ready server in the category",
            ));
        };
        ctx.in_flight = Some(backend.state.start_request());
        ctx.failure_recorded = false;
        let proxy = ctx
            .set
            .as_ref()
            .map(|s| Arc::clone(&s.proxy))
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no upstream set"))?;
        let mut peer = HttpPeer::new(backend.addr, false, String::new());
        peer.options.connection_timeout = Some(proxy.connect_timeout);
        peer.options.total_connection_timeout = Some(proxy.connect_timeout);
        // The idle timeout bounds every read; the shorter first-byte wait is the gate's.
        peer.options.read_timeout = Some(proxy.idle_timeout);
        peer.options.write_timeout = Some(proxy.idle_timeout);
        // Pooled upstream connections idle longer than this are closed rather than reused.
        peer.options.idle_timeout = Some(Duration::from_secs(60));
        ctx.target = Some(backend);
        Ok(Box::new(peer))
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        _reused: bool,
        _peer: &HttpPeer,
        fd: std::os::unix::io::RawFd,
        _digest: Option<&pingora::protocols::Digest>,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.sent_at = Some(Instant::now());
        // The first-byte wait starts when the request's last byte goes out (request_body_filter
        // at the end of the body, which Pingora also calls for a request without one).
        if ctx.clock.is_some() {
            ctx.awaiting_head_on = Some(fd);
        }
        Ok(())
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // The first-byte wait counts from the last request byte sent: a body that streams
        // slowly (within body_timeout) is not the server's delay.
        if let (true, Some(clock), Some(fd), Some(set)) =
            (end_of_stream, &ctx.clock, ctx.awaiting_head_on, &ctx.set)
        {
            if set.proxy.first_byte_timeout < set.proxy.idle_timeout {
                clock.arm_first_byte(fd, set.proxy.first_byte_timeout);
            }
        }
        // A chunked body declares no length: count it as it streams.
        ctx.body_bytes += body.as_ref().map_or(0, |b| b.len() as u64);
        if ctx
            .set
            .as_ref()
            .is_some_and(|s| ctx.body_bytes > s.proxy.max_body)
        {
            return Err(Error::explain(
                ErrorType::HTTPStatus(413),
                "request body larger than proxy.max_body",
            ));
        }
        let limit = ctx.set.as_ref().map(|s| s.proxy.body_timeout);
        if let (Some(t), Some(limit)) = (ctx.started, limit) {
            if t.elapsed() <= limit {
                return Ok(());
            }
            return Err(Error::explain(
                ErrorType::HTTPStatus(408),
                "request body not received within body_timeout",
            ));
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if resp.status.is_informational() {
            return Ok(());
        }
        ctx.awaiting_head_on = None;
        if let Some(clock) = &ctx.clock {
            clock.disarm_first_byte();
        }
        ctx.event_stream = resp
            .headers
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        if let (false, Some(set)) = (ctx.event_stream, &ctx.set) {
            if declared_length(&resp.headers).is_some_and(|n| n > set.proxy.max_response_body) {
                return Err(self.response_too_large(ctx));
            }
            ctx.response_limited = true;
        }
        if let (Some(set), Some(target)) = (&ctx.set, &ctx.target) {
            let now = clock::now_ms();
            if let Some(sent) = ctx.sent_at {
                target.state.observe_latency(sent.elapsed(), now);
            }
            if target
                .state
                .record_status(resp.status.as_u16(), now, &set.proxy.ejection)
            {
                if let Some(span) = set.try_eject(target, now, &set.proxy.ejection) {
                    tracing::info!(server = %target.id, ejected_for = ?span, "ejected after a run of 5xx answers");
                }
            }
        }
        Ok(())
    }

    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        if ctx.response_limited {
            ctx.response_bytes += body.as_ref().map_or(0, |b| b.len() as u64);
            if ctx
                .set
                .as_ref()
                .is_some_and(|s| ctx.response_bytes > s.proxy.max_response_body)
            {
                return Err(self.response_too_large(ctx));
            }
        }
        Ok(None)
    }

    fn on_connection_reuse(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
        prev_ctx: Box<dyn std::any::Any + Send + Sync>,
    ) {
        // The gate's head deadline ends here: the head has been read.
        if let Ok(clock) = prev_ctx.downcast::<Arc<RequestClock>>() {
            clock.mark_head();
            ctx.clock = Some(*clock);
        }
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let (Some(set), Some(target)) = (&ctx.set, &ctx.target) else {
            return Err(Error::explain(
                ErrorType::InternalError,
                "no upstream chosen",
            ));
        };
        let uri = match &ctx.query {
            None => set.mcp_uri.clone(),
            Some(q) => format!("{}?{q}", set.mcp_path)
                .parse()
                .map_err(|_| Error::explain(ErrorType::InternalError, "bad upstream path"))?,
        };
        upstream.set_uri(uri);
        // The server checks Host against its own allow-list (DNS-rebinding defence): it must
        // see its own address, not the public name the client used.
        if let Some(host) = upstream.headers.get(http::header::HOST).cloned() {
            upstream.insert_header("x-forwarded-host", host)?;
        }
        upstream.insert_header(http::header::HOST, target.host.clone())?;
        if let Some(inner) = ctx.inner_session.clone() {
            upstream.insert_header(SESSION_HEADER, inner)?;
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let (Some(inner), Some(set), Some(target)) =
            (resp.headers.get(SESSION_HEADER), &ctx.set, &ctx.target)
        {
            match self.codec.encode(&set.name, target.addr, inner.as_bytes()) {
                Ok(token) => {
                    crate::metrics::session_created(&set.name);
                    resp.insert_header(SESSION_HEADER, token)?;
                }
                Err(e) => {
                    tracing::warn!(server = %target.id, error = %e, "dropping a session id the server minted");
                    resp.remove_header(SESSION_HEADER);
                }
            }
        }
        if ctx.event_stream {
            // Tell any buffering hop downstream (nginx in front of us, say) to pass events on.
            resp.insert_header("x-accel-buffering", "no")?;
        }
        Ok(())
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        ctx.connect_failed = true;
        if let Some(target) = &ctx.target {
            target.state.record_connect_failure();
            ctx.last_failed = Some(target.addr);
        }
        self.passive_failure(ctx);
        ctx.in_flight = None;
        // Nothing reached the server, so another one may take the request (within the budget);
        // a session request has nowhere else to go.
        let retry = self.may_retry(ctx);
        ctx.retry_refused = !retry && !ctx.session_bound;
        if retry {
            if let Some(set) = &ctx.set {
                crate::metrics::retry(&set.name, "connect");
            }
        }
        e.set_retry(retry);
        e
    }

    fn error_while_proxy(
        &self,
        _peer: &HttpPeer,
        session: &mut Session,
        mut e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        ctx.first_byte_timed_out = ctx.first_byte_fired();
        if e.esource() == &pingora::ErrorSource::Upstream || ctx.first_byte_timed_out {
            self.passive_failure(ctx);
            if let Some(target) = &ctx.target {
                ctx.last_failed = Some(target.addr);
            }
        }
        // Pingora's rule: only an idempotent request whose reused connection failed before any
        // answer may be retried (the server closed an idle connection as we sent). A POST that
        // may have reached the server, or a request the first-byte wait cut, is never retried.
        let idempotent = session.req_header().method.is_idempotent()
            && !session.as_ref().retry_buffer_truncated();
        if idempotent && !ctx.first_byte_timed_out {
            e.retry.decide_reuse(client_reused);
        } else {
            e.set_retry(false);
        }
        if e.retry() && !self.may_retry(ctx) {
            e.set_retry(false);
        }
        if e.retry() {
            if let Some(set) = &ctx.set {
                crate::metrics::retry(&set.name, "reused-connection");
            }
        }
        e
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        ctx.first_byte_timed_out |= ctx.first_byte_fired();
        let (status, rpc_code, message) = match e.etype() {
            _ if ctx.session_bound && ctx.connect_failed => (
                404,
                code::SESSION_NOT_FOUND,
                session_not_found("its server does not answer"),
            ),
            _ if ctx.response_too_large => (
                502,
                code::UPSTREAM_FAILED,
                "upstream answer larger than proxy.max_response_body".to_string(),
            ),
            _ if ctx.first_byte_timed_out => (
                504,
                code::TIMEOUT,
                format!(
                    "upstream server sent no answer within {:?}",
                    ctx.set
                        .as_ref()
                        .map_or(Duration::ZERO, |s| s.proxy.first_byte_timeout)
                ),
            ),
            ErrorType::HTTPStatus(408) => (
                408,
                code::BAD_REQUEST,
                "request body not received in time".to_string(),
            ),
            ErrorType::HTTPStatus(413) => (
                413,
                code::BAD_REQUEST,
                "request body larger than proxy.max_body".to_string(),
            ),
            _ if ctx.retry_refused && ctx.connect_failed => (
                502,
                code::UPSTREAM_FAILED,
                "upstream server refused the connection; retries exhausted".to_string(),
            ),
            ErrorType::HTTPStatus(503) => (
                503,
                code::UNAVAILABLE,
                "no ready server in the category".to_string(),
            ),
            ErrorType::HTTPStatus(code) => (*code, code::BAD_REQUEST, "request refused".into()),
            ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout
                if e.esource() == &pingora::ErrorSource::Upstream =>
            {
                (504, code::TIMEOUT, "upstream server timed out".to_string())
            }
            _ => match e.esource() {
                pingora::ErrorSource::Upstream => (
                    502,
                    code::UPSTREAM_FAILED,
                    "upstream server failed".to_string(),
                ),
                pingora::ErrorSource::Downstream => {
                    (400, code::BAD_REQUEST, "bad request".to_string())
                }
                _ => (500, code::UPSTREAM_FAILED, "proxy error".to_string()),
            },
        };
        // A downstream that is gone cannot be answered; anything else gets a JSON-RPC body,
        // unless the response has already started (then the connection is simply closed).
        let downstream_gone = e.esource() == &pingora::ErrorSource::Downstream
            && matches!(
                e.etype(),
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed
            );
        if !downstream_gone && session.response_written().is_none() {
            // The connection is closed after this answer; say so, or a client that pools
            // connections sends its next request into a closing socket.
            session.set_keepalive(None);
            let _ = respond_rpc_error(session, status, rpc_code, &message, None).await;
        }
        FailToProxy {
            error_code: if downstream_gone { 0 } else { status },
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        if ctx.counted {
            let method = crate::metrics::method_label(
                session
                    .req_header()
                    .headers
                    .get("mcp-method")
                    .map(|v| v.as_bytes()),
            );
            let seconds = ctx.started.map_or(0.0, |t| t.elapsed().as_secs_f64());
            match &ctx.set {
                Some(set) => set.record_answer(status, method, seconds),
                None => crate::metrics::request("unknown", status, method, seconds),
            }
            let category = ctx.set.as_ref().map_or("unknown", |s| &*s.name);
            if ctx.session_bound
                && session.req_header().method == Method::DELETE
                && (200..300).contains(&status)
            {
                crate::metrics::session_ended(category);
            }
        }
        if tracing::enabled!(tracing::Level::DEBUG) {
            let server = ctx.target.as_ref().map(|b| b.id.as_ref()).unwrap_or("-");
            tracing::debug!(
                method = %session.req_header().method,
                path = %session.req_header().uri.path(),
                status,
                server,
                attempts = ctx.attempts,
                error = e.map(|e| e.to_string()),
                "request"
            );
        }
    }
}
