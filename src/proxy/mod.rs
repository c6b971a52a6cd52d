//! The `ProxyHttp` implementation: routing `/mcp/{category}`, stateless session affinity, retries
//! of requests that cannot have reached a server, and the local `/health` and `/stats` answers.
//!
//! The proxy knows upstream sets and nothing of processes: servers appear and vanish in the
//! registry snapshot it loads once per request.

pub mod reply;
pub mod route;
pub mod session;

use crate::upstream::{Backend, InFlight, Registry, UpstreamSet};
use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderValue, Method, Uri};
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
use std::time::Duration;

const SESSION_HEADER: &str = "mcp-session-id";

/// Timeouts applied to every upstream connection.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamTimeouts {
    pub connect: Duration,
    /// Longest silence on an upstream connection (between SSE events, or before a slow reply).
    pub idle: Duration,
}

/// Requests in progress across all worker threads, and whether the instance is shutting down.
/// Shared with the process lifecycle so SIGTERM can wait for the count to reach zero.
#[derive(Debug, Default)]
pub struct Traffic {
    in_flight: AtomicUsize,
    draining: AtomicBool,
}

impl Traffic {
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
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
pub struct RequestGuard(Arc<Traffic>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

pub struct FleetProxy {
    registry: Arc<Registry>,
    codec: SessionCodec,
    timeouts: UpstreamTimeouts,
    max_retries: usize,
    traffic: Arc<Traffic>,
}

impl FleetProxy {
    pub fn new(
        registry: Arc<Registry>,
        codec: SessionCodec,
        timeouts: UpstreamTimeouts,
        max_retries: usize,
        traffic: Arc<Traffic>,
    ) -> Self {
        Self {
            registry,
            codec,
            timeouts,
            max_retries,
            traffic,
        }
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
        self.traffic.in_flight.fetch_add(1, Ordering::AcqRel);
        ctx.guard = Some(RequestGuard(Arc::clone(&self.traffic)));

        let snapshot = self.registry.load();
        let uri = &session.req_header().uri;
        let route = route::parse(uri.path(), uri.query());
        let (category, query) = match route {
            Route::Health => {
                let (status, body) = reply::health(&snapshot, self.traffic.draining());
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
                        .ready_by_addr(&r.backend)
                        .ok_or("its server is gone or not ready")?;
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
                    return respond_rpc_error(
                        session,
                        404,
                        code::SESSION_NOT_FOUND,
                        &session_not_found(reason),
                        None,
                    )
                    .await
                }
            }
        } else if set.ready_count() == 0 {
            let message = format!("no server of category {} is ready", set.name);
            return respond_rpc_error(session, 503, code::UNAVAILABLE, &message, None).await;
        }
        ctx.set = Some(set);
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
            // A retry goes to another server: with round-robin the next pick already is one,
            // unless the set has shrunk to the failed server alone.
            let mut pick = set.pick();
            if pick.map(|b| Some(b.addr)) == Some(ctx.last_failed) && set.ready_count() > 1 {
                pick = set.pick();
            }
            pick.cloned()
        };
        let Some(backend) = backend else {
            return Err(Error::explain(
                ErrorType::HTTPStatus(503),
                "no ready server in the category",
            ));
        };
        ctx.in_flight = Some(backend.state.start_request());
        let mut peer = HttpPeer::new(backend.addr, false, String::new());
        peer.options.connection_timeout = Some(self.timeouts.connect);
        peer.options.total_connection_timeout = Some(self.timeouts.connect);
        peer.options.read_timeout = Some(self.timeouts.idle);
        peer.options.write_timeout = Some(self.timeouts.idle);
        // Pooled upstream connections idle longer than this are closed rather than reused.
        peer.options.idle_timeout = Some(Duration::from_secs(60));
        ctx.target = Some(backend);
        Ok(Box::new(peer))
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
        let path_and_query = match &ctx.query {
            Some(q) => format!("{}?{q}", set.mcp_path),
            None => set.mcp_path.to_string(),
        };
        let uri: Uri = path_and_query
            .parse()
            .map_err(|_| Error::explain(ErrorType::InternalError, "bad upstream path"))?;
        upstream.set_uri(uri);
        // The server checks Host against its own allow-list (DNS-rebinding defence): it must
        // see its own address, not the public name the client used.
        if let Some(host) = upstream.headers.get(http::header::HOST).cloned() {
            upstream.insert_header("x-forwarded-host", host)?;
        }
        upstream.insert_header(http::header::HOST, target.addr.to_string())?;
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
                    resp.insert_header(SESSION_HEADER, token)?;
                }
                Err(e) => {
                    tracing::warn!(server = %target.id, error = %e, "dropping a session id the server minted");
                    resp.remove_header(SESSION_HEADER);
                }
            }
        }
        let is_sse = resp
            .headers
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        if is_sse {
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
        ctx.in_flight = None;
        // Nothing reached the server, so another one may take the request; a session request
        // has nowhere else to go.
        if !ctx.session_bound && ctx.attempts <= self.max_retries {
            e.set_retry(true);
        }
        e
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let (status, rpc_code, message) = match e.etype() {
            _ if ctx.session_bound && ctx.connect_failed => (
                404,
                code::SESSION_NOT_FOUND,
                session_not_found("its server does not answer"),
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
            let _ = respond_rpc_error(session, status, rpc_code, &message, None).await;
        }
        FailToProxy {
            error_code: if downstream_gone { 0 } else { status },
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        if tracing::enabled!(tracing::Level::DEBUG) {
            let status = session.response_written().map_or(0, |r| r.status.as_u16());
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
