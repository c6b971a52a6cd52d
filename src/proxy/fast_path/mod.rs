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
mod pool;
mod relay;

use relay::{deadline, read_at_least, send, upload, write_all, Upload};
mod scratch;

use super::policy::{
    self, admit, answer, enter, Admission, Admitted, Attempts, BodyFraming, Context, Entry,
    Failure, Head, Refusal, RoutingFields, SharedEdge, Verdict,
};
use super::session::SharedCodec;
use super::wire;
use crate::upstream::{clock, Backend, Registry, UpstreamSet};
use chunked::{ChunkedBody, Dechunked};
use pingora::protocols::Stream;
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

/// Writes `{verb} {path}[?query] HTTP/1.1` into the room at the front of `head` (see
/// `LINE_ROOM`), or in place of it when it is longer; returns where the head now starts.
fn request_line(head: &mut Vec<u8>, verb: &str, path: &str, query: Option<&str>) -> usize {
    let (mark, query): (&[u8], &[u8]) = match query {
        Some(q) => (b"?", q.as_bytes()),
        None => (b"", b""),
    };
    let parts: [&[u8]; 6] = [
        verb.as_bytes(),
        b" ",
        path.as_bytes(),
        mark,
        query,
        b" HTTP/1.1\r\n",
    ];
    let len: usize = parts.iter().map(|p| p.len()).sum();
    if len > LINE_ROOM {
        head.splice(..LINE_ROOM, parts.concat());
        return 0;
    }
    let mut at = LINE_ROOM - len;
    let start = at;
    for part in parts {
        head[at..at + part.len()].copy_from_slice(part);
        at += part.len();
    }
    start
}

/// What to do with the head at the front of a connection's buffer.
// `Take` carries the admitted request inline: moved once, cheaper than an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Plan {
    /// Not all of it has arrived.
    Partial,
    /// Pingora's path takes it.
    Defer,
    Take(Exchange),
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

fn is(name: &str, lower: &str) -> bool {
    name.len() == lower.len() && name.eq_ignore_ascii_case(lower)
}

/// What a request's `Connection` field asks of this hop, when this engine can honour it: only
/// the persistence options (`keep-alive`, which every MCP SDK sends, and `close`): `Some(true)`
/// for close. Any other option (a field to strip at this hop, `upgrade`) is Pingora's path's.
fn persistence(value: &[u8]) -> Option<bool> {
    let mut close = false;
    for token in value.split(|&b| b == b',') {
        let token = token.trim_ascii();
        if token.eq_ignore_ascii_case(b"close") {
            close = true;
        } else if !token.eq_ignore_ascii_case(b"keep-alive") && !token.is_empty() {
            return None;
        }
    }
    Some(close)
}

/// Request fields that ask for connection handling this engine does not do.
fn needs_pingora(name: &str) -> bool {
    is(name, "expect")
        || is(name, "upgrade")
        || is(name, "te")
        || is(name, "keep-alive")
        || is(name, "proxy-connection")
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

    /// Decides on the head at the front of `buf`, from a client at `client_ip`.
    pub fn plan(&self, buf: &[u8], client_ip: Option<std::net::IpAddr>) -> Plan {
        let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
        let mut req = httparse::Request::new(&mut fields);
        let head_len = match req.parse(buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if buf.len() <= HEAD_LIMIT => return Plan::Partial,
            _ => return Plan::Defer,
        };
        let snapshot = self.registry.load();
        // The three methods of the Streamable HTTP transport: calls, the standalone event
        // stream and the end of a session.
        let verb = match req.method {
            Some("POST") => "POST",
            Some("GET") => "GET",
            Some("DELETE") => "DELETE",
            _ => return Plan::Defer,
        };
        if !snapshot.proxy.fast_path || req.version != Some(1) {
            return Plan::Defer;
        }
        let Some(target) = req.path else {
            return Plan::Defer;
        };
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (target, None),
        };

        // One pass for what admission reads and what this engine cannot carry, copying the
        // fields the server gets after room left for the request line (which names the
        // category's path, known only once the request is admitted).
        let mut upstream_head = Scratch::take(LINE_ROOM + head_len + 128);
        upstream_head.resize(LINE_ROOM, 0);
        let mut length = None;
        let mut coding = None;
        let mut host = None;
        let mut token = None;
        let mut origin = None;
        let mut method_field = None;
        let mut name_field = None;
        let mut authorization = None;
        let mut field_bytes = 0u64;
        let mut client_close = false;
        for f in req.headers.iter() {
            field_bytes += (f.name.len() + f.value.len()) as u64;
            let name = f.name;
            if is(name, "connection") {
                // Hop-by-hop: honoured here, never passed on.
                match persistence(f.value) {
                    Some(close) => client_close |= close,
                    None => return Plan::Defer,
                }
                continue;
            }
            let (once, passed_on) = if is(name, "content-length") {
                (&mut length, true)
            } else if is(name, "transfer-encoding") {
                // Passed on below, once the body is known not to be empty.
                (&mut coding, false)
            } else if is(name, "host") {
                (&mut host, false)
            } else if is(name, answer::SESSION_FIELD) {
                (&mut token, false)
            } else if is(name, "origin") {
                (&mut origin, true)
            } else if is(name, "mcp-method") {
                (&mut method_field, true)
            } else if is(name, "mcp-name") {
                (&mut name_field, true)
            } else if is(name, "authorization") {
                // The client's credential is this proxy's to check, never a server's.
                (&mut authorization, false)
            } else if is(name, policy::FORWARDED_HOST) {
                continue;
            } else if needs_pingora(name) {
                return Plan::Defer;
            } else {
                wire::header(&mut upstream_head, name.as_bytes(), f.value);
                continue;
            };
            // A field given twice is for Pingora's path to read (and refuse where it must).
            if once.replace(f.value).is_some() {
                return Plan::Defer;
            }
            if passed_on {
                wire::header(&mut upstream_head, name.as_bytes(), f.value);
            }
        }
        let framing = policy::framing(length, coding);
        let mut dechunked = None;
        let body_len = match framing {
            // Over `proxy.max_body`, admission refuses it below (on Pingora's path).
            Ok(BodyFraming::Length(n)) if verb == "POST" || n == 0 => {
                usize::try_from(n).unwrap_or(usize::MAX)
            }
            // A GET or DELETE carries no body.
            Ok(BodyFraming::None) if verb != "POST" => 0,
            // Read whole before anything else, as on Pingora's path, so that broken framing is
            // answered (there) and nothing of it reaches a server.
            Ok(BodyFraming::Chunked) if verb == "POST" => {
                let scratch = Scratch::take(buf.len() - head_len + 32);
                match chunked::request(&buf[head_len..], policy::CHUNKED_BODY_LIMIT, scratch) {
                    chunked::Request::Whole { raw_len, body } => {
                        if let (Some(coding), false) = (coding, body.payload().is_empty()) {
                            wire::header(&mut upstream_head, b"transfer-encoding", coding);
                        }
                        dechunked = Some(body);
                        raw_len
                    }
                    chunked::Request::Partial => return Plan::Partial,
                    chunked::Request::Decline => return Plan::Defer,
                }
            }
            _ => return Plan::Defer,
        };
        let head = Head {
            method: verb,
            path,
            query,
            uri_len: target.len(),
            fields: req.headers.len(),
            field_bytes,
            framing,
            origin,
            session: token,
            authorization,
            client_ip,
            routing: RoutingFields {
                method: method_field,
                name: name_field,
            },
        };
        let hash_field = |name: &http::HeaderName| {
            req.headers
                .iter()
                .find(|f| is(f.name, name.as_str()))
                .map(|f| f.value)
        };
        let codec = self.codec.load();
        let cx = Context {
            codec: &codec,
            edge: &self.edge,
            now_ms: clock::now_ms(),
            keys_fetched: false,
        };
        let admitted = match admit(&snapshot, &cx, &head, hash_field) {
            Admission::Admitted(a) => a,
            // Refusals are Pingora's path's to answer (with lingering close where needed), as
            // is a token whose signing key must be fetched first.
            Admission::Refused { .. } | Admission::Local(_) | Admission::AwaitKeys => {
                return Plan::Defer
            }
        };
        // A body the policy reads is read whole, which is Pingora's path's to do when large.
        if body_len as u64 > BODY_LIMIT && admitted.wants_body {
            return Plan::Defer;
        }
        if let Some(body) = &dechunked {
            // Over the category's limit: Pingora's path counts it as it streams and refuses.
            if body.payload().len() as u64 > admitted.set.proxy.max_body {
                return Plan::Defer;
            }
        }
        let body = if admitted.wants_body {
            match dechunked
                .as_ref()
                .map_or(buf.get(head_len..head_len + body_len), |d| {
                    Some(d.payload())
                }) {
                Some(body) => Some(body),
                // The policy reads the body before a server is chosen: wait for all of it.
                None => return Plan::Partial,
            }
        } else {
            None
        };
        match enter(&admitted, &cx, &head.routing, body, false) {
            Entry::Go { .. } => {}
            Entry::Refused(_) | Entry::Defer => return Plan::Defer,
        }
        if let Some(host) = host {
            wire::header(&mut upstream_head, policy::FORWARDED_HOST.as_bytes(), host);
        }
        if let Some(inner) = &admitted.inner_session {
            wire::header(&mut upstream_head, answer::SESSION_FIELD.as_bytes(), inner);
        }
        for field in &admitted.set.access.upstream_headers {
            wire::header(
                &mut upstream_head,
                field.name.as_bytes(),
                field.value.as_bytes(),
            );
        }
        let head_start = request_line(&mut upstream_head, verb, &admitted.set.mcp_path, query);
        Plan::Take(Exchange {
            admitted,
            head_start,
            head_len,
            body_len,
            dechunked,
            upstream_head,
            verb,
            method: crate::metrics::method_label(method_field),
            client_close,
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
            attempts: Attempts::new(ex.admitted.target.is_some()),
            ex,
            started,
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
            seconds: started.elapsed().as_secs_f64(),
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
    ex: Exchange,
    attempts: Attempts,
    started: Instant,
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
    async fn go(&mut self, client: &mut Stream, buf: &mut Vec<u8>, closing: bool) -> Outcome {
        let set = Arc::clone(&self.ex.admitted.set);
        let proxy = &set.proxy;
        let whole = self.ex.head_len + self.ex.body_len;
        // A large body is not held: what has arrived goes with the head, the rest after it.
        let streamed = self.ex.body_len as u64 > BODY_LIMIT;
        if !streamed && buf.len() < whole {
            let deadline = tokio::time::Instant::from_std(self.started) + proxy.body_timeout;
            match tokio::time::timeout_at(deadline, read_at_least(client, buf, whole)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Outcome::Close,
                Err(_) => return self.answer(client, &Refusal::body_timeout()).await,
            }
        }
        set.record_request(clock::ms_at(self.started));

        let fixed = self.ex.upstream_head.len();
        loop {
            let now_ms = if self.attempts.count() == 0 {
                clock::ms_at(self.started)
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
                    buf.drain(..whole.min(buf.len()));
                    return self.answer(client, &refusal).await;
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
                    let write_by = tokio::time::Instant::from_std(sent_at) + proxy.idle_timeout;
                    let request = &request[self.ex.head_start..];
                    match send(&mut upstream, request, write_by).await {
                        Sent::All => {
                            buf.drain(..in_buf);
                            // Never sent again (a request that reached a server is not
                            // retried), and an event stream holds it for its whole life.
                            self.ex.upstream_head.release();
                            self.ex.dechunked = None;
                            if in_buf < whole {
                                let body_by = tokio::time::Instant::from_std(self.started)
                                    + proxy.body_timeout;
                                let left = whole - in_buf;
                                let uploaded = upload(
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
                                    Err(Upload::ClientSlow) => {
                                        return self.answer(client, &Refusal::body_timeout()).await
                                    }
                                    Err(Upload::Failed(failure)) => {
                                        let refusal = self.fail(&set, &backend, failure);
                                        return self.answer(client, &refusal).await;
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
                                    return self.answer(client, &refusal).await;
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
                    buf.drain(..whole.min(buf.len()));
                    return self.answer(client, &refusal).await;
                }
            }
        }
    }

    /// A pooled or new connection to `backend` (and whether it was pooled); `None` when it could
    /// not be opened within `proxy.connect_timeout`.
    async fn connect(&self, set: &UpstreamSet, backend: &Backend) -> Option<(TcpStream, bool)> {
        if let Some(stream) = self.path.pool.take(backend.addr, self.started) {
            return Some((stream, true));
        }
        let connected =
            tokio::time::timeout(set.proxy.connect_timeout, TcpStream::connect(backend.addr)).await;
        let stream = connected.ok()?.ok()?;
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

    async fn answer(&mut self, client: &mut Stream, refusal: &Refusal) -> Outcome {
        refusal.record(Some(&self.ex.admitted.set.name));
        let bytes = wire::answer(refusal);
        let send_timeout = self.ex.admitted.set.proxy.send_timeout;
        if write_all(client, &bytes, deadline(send_timeout)).await {
            self.status = refusal.status;
        }
        Outcome::Close
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_persistence_options_stay_on_the_fast_path() {
        assert_eq!(super::persistence(b"keep-alive"), Some(false));
        assert_eq!(super::persistence(b"Keep-Alive"), Some(false));
        assert_eq!(super::persistence(b"close"), Some(true));
        assert_eq!(super::persistence(b"keep-alive, close"), Some(true));
        assert_eq!(super::persistence(b" , keep-alive ,"), Some(false));
        assert_eq!(super::persistence(b"keep-alive, x-trace"), None);
        assert_eq!(super::persistence(b"upgrade"), None);
    }

    use super::*;

    #[test]
    fn the_request_line_fills_the_room_in_front_of_the_fields_or_replaces_it() {
        let mut head = vec![0u8; LINE_ROOM];
        head.extend_from_slice(b"a: 1\r\n");
        let start = request_line(&mut head, "POST", "/mcp", Some("x=1"));
        assert_eq!(&head[start..], b"POST /mcp?x=1 HTTP/1.1\r\na: 1\r\n");

        let long = "q".repeat(LINE_ROOM);
        let mut head = vec![0u8; LINE_ROOM];
        head.extend_from_slice(b"a: 1\r\n");
        let start = request_line(&mut head, "POST", "/mcp", Some(&long));
        assert_eq!(start, 0);
        assert_eq!(
            head,
            format!("POST /mcp?{long} HTTP/1.1\r\na: 1\r\n").into_bytes()
        );

        let mut head = vec![0u8; LINE_ROOM];
        let start = request_line(&mut head, "DELETE", "/mcp", None);
        assert_eq!(&head[start..], b"DELETE /mcp HTTP/1.1\r\n");
    }
}
