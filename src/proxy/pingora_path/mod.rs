//! Pingora's path: the `ProxyHttp` engine for every request the fast path does not take (event
//! streams, `DELETE`, chunked and large bodies, unusual fields, local endpoints, refusals). It
//! moves bytes through Pingora's hooks and asks the policy core what each step means.

mod client;
mod ctx;

use client::{preread, refuse, request_framing, respond, Preread};
use ctx::fallback_refusal;
pub use ctx::RequestCtx;

use super::policy::{
    self, admit, answer, enter, refusal, Admission, Attempts, BodyFraming, Context, Entry, Failure,
    Head, Local, Refusal, RoutingFields, SharedEdge,
};
use super::{reply, session::SharedCodec, RequestGuard, Traffic};
use crate::upstream::{clock, Registry};
use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderValue, Method};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::{HttpPeer, ProxyHttp, Session};
use pingora::proxy::FailToProxy;
use pingora::{Error, ErrorSource, ErrorType, Result};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The proxy. Timeouts, retries and ejection rules come from the category's snapshot
/// (`UpstreamSet::proxy`), so a reload changes them for the next request.
pub struct FleetProxy {
    registry: Arc<Registry>,
    codec: SharedCodec,
    edge: SharedEdge,
    traffic: Arc<Traffic>,
}

impl FleetProxy {
    pub fn new(
        registry: Arc<Registry>,
        codec: SharedCodec,
        edge: SharedEdge,
        traffic: Arc<Traffic>,
    ) -> Self {
        Self {
            registry,
            codec,
            edge,
            traffic,
        }
    }
}

/// The routing fields of a request head.
fn routing_fields(req: &RequestHeader) -> RoutingFields<'_> {
    RoutingFields {
        method: req.headers.get("mcp-method").map(|v| v.as_bytes()),
        name: req.headers.get("mcp-name").map(|v| v.as_bytes()),
    }
}

#[async_trait]
impl ProxyHttp for FleetProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::default()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        crate::metrics::metrics().in_flight.inc();
        // HTTP/1 requests are counted where the gate chooses the engine; an HTTP/2 connection
        // is Pingora's whole, each of its requests here.
        if session.as_downstream().is_http2() {
            crate::metrics::metrics().pingora_path.inc();
        }
        ctx.guard = Some(RequestGuard);
        ctx.started = Some(Instant::now());
        let snapshot = self.registry.load();
        let now = clock::now_ms();
        let framing = request_framing(session);
        let client_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let codec = self.codec.load();
        let mut cx = Context {
            codec: &codec,
            edge: &self.edge,
            now_ms: now,
            keys_fetched: false,
        };
        let admission = loop {
            let req = session.req_header();
            let uri = &req.uri;
            let head = Head {
                method: req.method.as_str(),
                path: uri.path(),
                query: uri.query(),
                uri_len: uri.path_and_query().map_or(0, |p| p.as_str().len()),
                fields: req.headers.len(),
                field_bytes: req
                    .headers
                    .iter()
                    .map(|(k, v)| (k.as_str().len() + v.len()) as u64)
                    .sum(),
                framing,
                origin: req.headers.get(http::header::ORIGIN).map(|v| v.as_bytes()),
                session: req.headers.get(answer::SESSION_FIELD).map(|v| v.as_bytes()),
                authorization: req
                    .headers
                    .get(http::header::AUTHORIZATION)
                    .map(|v| v.as_bytes()),
                client_ip,
                routing: routing_fields(req),
            };
            match admit(&snapshot, &cx, &head, |name| {
                req.headers.get(name).map(|v| v.as_bytes())
            }) {
                Admission::AwaitKeys if !cx.keys_fetched => {
                    self.edge.auth.refresh_keys().await;
                    cx.keys_fetched = true;
                }
                other => break other,
            }
        };
        let query = session.req_header().uri.query().map(Into::into);
        let admitted = match admission {
            Admission::Local(local) => {
                let (status, body) = match local {
                    Local::Health => {
                        reply::health(&snapshot, self.traffic.draining(), &self.registry.labels())
                    }
                    Local::Stats => (200, reply::stats(&snapshot)),
                    Local::ResourceMetadata(category) => {
                        let doc = self.edge.auth.with_config(|auth| {
                            reply::resource_metadata(&snapshot, auth, category.as_deref())
                        });
                        match doc {
                            Some(doc) => (200, doc),
                            None => {
                                let refusal =
                                    Refusal::no_such_endpoint(policy::categories(&snapshot));
                                refuse(session, &refusal, None).await?;
                                return Ok(true);
                            }
                        }
                    }
                };
                respond(session, status, body, refusal::JSON_FIELDS.into_iter()).await?;
                return Ok(true);
            }
            Admission::Refused {
                refusal,
                set,
                counted,
            } => {
                ctx.counted = counted;
                refuse(session, &refusal, set.as_deref().map(|s| &*s.name)).await?;
                ctx.set = set;
                return Ok(true);
            }
            Admission::Admitted(admitted) => admitted,
            // Only asked for without `keys_fetched`, which the loop above sets: never here,
            // but an answer rather than a panic if it were.
            Admission::AwaitKeys => {
                refuse(session, &Refusal::keys_unavailable(), None).await?;
                return Ok(true);
            }
        };
        ctx.counted = true;
        let set = Arc::clone(&admitted.set);
        ctx.set = Some(Arc::clone(&set));
        ctx.query = query;
        ctx.attempts = Attempts::new(admitted.target.is_some());
        let wants_body = admitted.wants_body;
        if framing == Ok(BodyFraming::Chunked) || wants_body {
            if let Preread::Refused(refusal) = preread(session, set.proxy.body_timeout).await {
                refuse(session, &refusal, Some(&set.name)).await?;
                return Ok(true);
            }
        }
        let body = wants_body.then(|| session.as_downstream().get_retry_buffer());
        let body = body.map(|b| b.unwrap_or_default());
        match enter(
            &admitted,
            &cx,
            &routing_fields(session.req_header()),
            body.as_deref(),
            true,
        ) {
            Entry::Go { filter } => ctx.filter = filter,
            Entry::Refused(refusal) => {
                refuse(session, &refusal, Some(&set.name)).await?;
                return Ok(true);
            }
            // Only for an engine that cannot filter; this one can.
            Entry::Defer => {
                refuse(session, &Refusal::internal(), Some(&set.name)).await?;
                return Ok(true);
            }
        }
        ctx.admitted = Some(admitted);
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
        let (Some(set), Some(admitted)) = (ctx.set.clone(), &ctx.admitted) else {
            return Err(Error::explain(ErrorType::InternalError, "no upstream set"));
        };
        let picked = ctx.attempts.pick(
            &set,
            admitted.target.as_ref(),
            admitted.hash_key,
            clock::now_ms(),
        );
        let backend = match picked {
            Ok(b) => b,
            Err(refusal) => return Err(ctx.refuse_request(refusal)),
        };
        ctx.in_flight = Some(backend.state.start_request());
        ctx.head_seen = false;
        ctx.failure = None;
        let proxy = &set.proxy;
        let mut peer = HttpPeer::new(backend.addr, false, String::new());
        peer.options.connection_timeout = Some(proxy.connect_timeout);
        peer.options.total_connection_timeout = Some(proxy.connect_timeout);
        // The idle timeout bounds every read and write; the answer's head must also come within
        // the first-byte wait, counted from the request's last byte (vendored client, patch 4).
        peer.options.read_timeout = Some(proxy.idle_timeout);
        peer.options.write_timeout = Some(proxy.idle_timeout);
        peer.options.first_byte_timeout = Some(policy::first_byte_wait(proxy));
        peer.options.idle_timeout = Some(policy::POOLED_IDLE_LIMIT);
        ctx.target = Some(backend);
        Ok(Box::new(peer))
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        _reused: bool,
        _peer: &HttpPeer,
        _fd: std::os::unix::io::RawFd,
        _digest: Option<&pingora::protocols::Digest>,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.sent_at = Some(Instant::now());
        Ok(())
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let Some(set) = ctx.set.clone() else {
            return Ok(());
        };
        // A chunked body declares no length: count it as it streams.
        ctx.body_bytes += body.as_ref().map_or(0, |b| b.len() as u64);
        if ctx.body_bytes > set.proxy.max_body {
            return Err(ctx.refuse_request(Refusal::body_too_large()));
        }
        if ctx
            .started
            .is_some_and(|t| t.elapsed() > set.proxy.body_timeout)
        {
            return Err(ctx.refuse_request(Refusal::body_timeout()));
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
        ctx.head_seen = true;
        let (Some(set), Some(target)) = (ctx.set.clone(), ctx.target.clone()) else {
            return Ok(());
        };
        ctx.event_stream = resp
            .headers
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| answer::is_event_stream(v.as_bytes()));
        ctx.response_limit = answer::body_limit(&set, ctx.event_stream);
        let declared = resp
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| policy::content_length(v.as_bytes()));
        if let (Some(limit), Some(n)) = (ctx.response_limit, declared) {
            if n > limit {
                return Err(ctx.fail_answer(Failure::TooLarge));
            }
        }
        let now = std::time::Instant::now();
        let latency = ctx.sent_at.map_or(Duration::ZERO, |t| now - t);
        answer::head_received(&set, &target, resp.status.as_u16(), latency, now);
        Ok(())
    }

    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        if let Some(limit) = ctx.response_limit {
            ctx.response_bytes += body.as_ref().map_or(0, |b| b.len() as u64);
            if ctx.response_bytes > limit {
                return Err(ctx.fail_answer(Failure::TooLarge));
            }
        }
        Ok(None)
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
        let uri = policy::upstream_target(set, ctx.query.as_deref())
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "bad upstream path"))?;
        upstream.set_uri(uri);
        upstream.remove_header(policy::FORWARDED_HOST);
        if let Some(host) = upstream.headers.get(http::header::HOST).cloned() {
            upstream.insert_header(policy::FORWARDED_HOST, host)?;
        }
        upstream.insert_header(http::header::HOST, target.host.clone())?;
        // A client's credential is for this proxy and never reaches a server; the category's
        // own credential (if any) takes its place.
        upstream.remove_header(&http::header::AUTHORIZATION);
        for field in &set.access.upstream_headers {
            upstream.insert_header(field.name.clone(), field.value.as_str())?;
        }
        if let Some(inner) = ctx.admitted.as_ref().and_then(|a| a.inner_session.as_ref()) {
            let inner = HeaderValue::from_bytes(inner)
                .map_err(|_| Error::explain(ErrorType::InternalError, "bad session id"))?;
            upstream.insert_header(answer::SESSION_FIELD, inner)?;
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let (Some(inner), Some(set), Some(target), Some(admitted)) = (
            resp.headers.get(answer::SESSION_FIELD),
            &ctx.set,
            &ctx.target,
            &ctx.admitted,
        ) {
            let caller = &admitted.caller;
            match answer::seal(&self.codec.load(), set, caller, target, inner.as_bytes()) {
                Some(token) => {
                    resp.insert_header(answer::SESSION_FIELD, token)?;
                }
                None => {
                    resp.remove_header(answer::SESSION_FIELD);
                }
            }
        }
        if ctx.event_stream {
            let (name, value) = answer::ACCEL_BUFFERING;
            resp.insert_header(name, value)?;
        }
        if ctx.filter.is_some() {
            if resp.status != http::StatusCode::OK {
                ctx.filter = None;
            } else {
                // The filtered answer is shorter: it is sent chunked (HTTP/1.1) or framed by
                // the connection (HTTP/2).
                resp.remove_header(&http::header::CONTENT_LENGTH);
                if !ctx.event_stream {
                    ctx.held = Some(Vec::new());
                    if !session.as_downstream().is_http2() {
                        resp.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
                    }
                }
            }
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        let Some(filter) = ctx.filter.as_mut() else {
            return Ok(None);
        };
        match ctx.held.as_mut() {
            Some(held) => {
                if let Some(chunk) = body.take() {
                    held.extend_from_slice(&chunk);
                }
                if end_of_stream {
                    *body = Some(Bytes::from(filter.json(held)));
                }
            }
            None => {
                let mut out = body.take().map_or_else(Vec::new, |c| filter.events(&c));
                if end_of_stream {
                    out.extend(filter.finish());
                }
                if !out.is_empty() {
                    *body = Some(Bytes::from(out));
                }
            }
        }
        Ok(None)
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let retry = ctx.attempt_failed(Failure::Connect);
        e.set_retry(retry);
        e
    }

    fn error_while_proxy(
        &self,
        _peer: &HttpPeer,
        _session: &mut Session,
        mut e: Box<Error>,
        ctx: &mut RequestCtx,
        _client_reused: bool,
    ) -> Box<Error> {
        // Pingora cannot tell how much of a request a failed write took, so nothing it reports
        // here proves the server read none of it: the policy never resends these.
        let retry = match ctx.classify(&e) {
            Some(failure) => ctx.attempt_failed(failure),
            None => false,
        };
        e.set_retry(retry);
        e
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        if ctx.refusal.is_none() {
            if let Some(failure) = ctx.classify(e) {
                ctx.attempt_failed(failure);
            }
        }
        let mut refusal = ctx.refusal.take().unwrap_or_else(|| fallback_refusal(e));
        // A downstream that is gone cannot be answered; anything else gets a JSON-RPC body,
        // unless the response has already started (then the connection is simply closed).
        let downstream_gone = e.esource() == &ErrorSource::Downstream
            && matches!(
                e.etype(),
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed
            );
        if !downstream_gone && session.response_written().is_none() {
            refusal.close = true;
            let category = ctx.set.as_deref().map(|s| &*s.name);
            let _ = refuse(session, &refusal, category).await;
        }
        FailToProxy {
            error_code: if downstream_gone { 0 } else { refusal.status },
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let req = session.req_header();
        if ctx.counted {
            answer::record(&answer::Outcome {
                set: ctx.set.as_deref(),
                status,
                method: crate::metrics::method_label(
                    req.headers.get("mcp-method").map(|v| v.as_bytes()),
                ),
                seconds: ctx.started.map_or(0.0, |t| t.elapsed().as_secs_f64()),
                ended_session: ctx.attempts.session_bound() && req.method == Method::DELETE,
            });
        }
        if tracing::enabled!(tracing::Level::DEBUG) {
            let server = ctx.target.as_ref().map(|b| b.id.as_ref()).unwrap_or("-");
            tracing::debug!(
                method = %req.method,
                path = %req.uri.path(),
                status,
                server,
                attempts = ctx.attempts.count(),
                error = e.map(|e| e.to_string()),
                "request"
            );
        }
    }
}
