//! The fast path: MCP `POST`s with a small `Content-Length` body, the bulk of MCP traffic,
//! exchanged in the connection's own task with one parse of each head, one write each way and
//! a pool of idle upstream connections that needs no task per connection.
//!
//! Pingora's proxy spends two to three times nginx's CPU per small request (boxed futures per
//! hook, a channel pair between the two sides, header maps rebuilt, a watcher task per pooled
//! connection); measured in BENCHMARKS.md. Everything else (`GET` event streams, `DELETE`,
//! chunked uploads, `Expect`, `Connection` options, local endpoints, any request admission
//! refuses) goes to Pingora's path untouched, and with `proxy.fast_path = false` everything
//! does. This engine only moves bytes: admission, the choice of server, retries, blame, the
//! answers it gives and the fields it rewrites are the policy core's, as on Pingora's path.

mod chunked;
mod pool;
mod scratch;

use super::policy::{
    self, admit, answer, Admission, Admitted, Attempts, BodyFraming, Failure, Head, Refusal,
    Verdict,
};
use super::session::SessionCodec;
use super::wire;
use crate::upstream::{clock, Backend, Registry, UpstreamSet};
use chunked::ChunkedBody;
use pingora::protocols::Stream;
use pool::UpstreamPool;
use scratch::Scratch;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest request body the fast path takes (read whole before a server is chosen, as nginx
/// does by default); larger ones stream through Pingora's path.
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
    body_len: usize,
    /// The head as the server gets it, minus `Host` and the final CRLF (they depend on the
    /// server picked).
    upstream_head: Scratch,
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

fn is(name: &str, lower: &str) -> bool {
    name.len() == lower.len() && name.eq_ignore_ascii_case(lower)
}

/// Request fields that ask for connection handling this engine does not do.
fn needs_pingora(name: &str) -> bool {
    is(name, "transfer-encoding")
        || is(name, "expect")
        || is(name, "connection")
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
        let snapshot = self.registry.load();
        if !snapshot.proxy.fast_path || req.method != Some("POST") || req.version != Some(1) {
            return Plan::Defer;
        }
        let Some(target) = req.path else {
            return Plan::Defer;
        };
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (target, None),
        };

        // One pass for what admission reads and what this engine cannot carry.
        let mut length = None;
        let mut host = None;
        let mut token = None;
        let mut origin = None;
        let mut method_field = None;
        let mut field_bytes = 0u64;
        for f in req.headers.iter() {
            field_bytes += (f.name.len() + f.value.len()) as u64;
            let name = f.name;
            let once = if is(name, "content-length") {
                &mut length
            } else if is(name, "host") {
                &mut host
            } else if is(name, answer::SESSION_FIELD) {
                &mut token
            } else if is(name, "origin") {
                &mut origin
            } else if is(name, "mcp-method") {
                &mut method_field
            } else if needs_pingora(name) {
                return Plan::Defer;
            } else {
                continue;
            };
            // A field given twice is for Pingora's path to read (and refuse where it must).
            if once.replace(f.value).is_some() {
                return Plan::Defer;
            }
        }
        let framing = match length {
            Some(v) => policy::framing([v], []),
            None => Ok(BodyFraming::None),
        };
        let body_len = match framing {
            Ok(BodyFraming::Length(n)) if n <= BODY_LIMIT => n as usize,
            _ => return Plan::Defer,
        };
        let head = Head {
            method: "POST",
            path,
            query,
            uri_len: target.len(),
            fields: req.headers.len(),
            field_bytes,
            framing,
            origin,
            session: token,
        };
        let hash_field = |name: &http::HeaderName| {
            req.headers
                .iter()
                .find(|f| is(f.name, name.as_str()))
                .map(|f| f.value)
        };
        let admitted = match admit(&snapshot, &self.codec, &head, hash_field, clock::now_ms()) {
            Admission::Admitted(a) => a,
            // Refusals are Pingora's path's to answer (with lingering close where needed).
            Admission::Refused { .. } | Admission::Local(_) => return Plan::Defer,
        };

        let set = &admitted.set;
        let mut upstream_head = Scratch::take(head_len + 128);
        upstream_head.extend_from_slice(b"POST ");
        upstream_head.extend_from_slice(set.mcp_path.as_bytes());
        if let Some(q) = query {
            upstream_head.push(b'?');
            upstream_head.extend_from_slice(q.as_bytes());
        }
        upstream_head.extend_from_slice(b" HTTP/1.1\r\n");
        for f in req.headers.iter() {
            let name = f.name;
            if is(name, "host")
                || is(name, answer::SESSION_FIELD)
                || is(name, policy::FORWARDED_HOST)
            {
                continue;
            }
            wire::header(&mut upstream_head, name.as_bytes(), f.value);
        }
        if let Some(host) = host {
            wire::header(
                &mut upstream_head,
                policy::FORWARDED_HOST.as_bytes(),
                host,
            );
        }
        if let Some(inner) = &admitted.inner_session {
            wire::header(
                &mut upstream_head,
                answer::SESSION_FIELD.as_bytes(),
                inner.as_bytes(),
            );
        }
        Plan::Take(Exchange {
            admitted,
            head_len,
            body_len,
            upstream_head,
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
            attempts: Attempts::new(ex.admitted.target.is_some()),
            ex,
            started,
            status: 0,
            target: None,
        };
        let outcome = run.go(client, buf, closing).await;
        let ex = &run.ex;
        answer::record(&answer::Outcome {
            set: Some(&ex.admitted.set),
            status: run.status,
            method: ex.method,
            seconds: started.elapsed().as_secs_f64(),
            ended_session: false,
        });
        if tracing::enabled!(tracing::Level::DEBUG) {
            tracing::debug!(
                method = "POST",
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
        if buf.len() < whole {
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
                    buf.drain(..whole);
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
                    request.extend_from_slice(&buf[self.ex.head_len..whole]);
                    let sent_at = Instant::now();
                    let write_by = tokio::time::Instant::from_std(sent_at) + proxy.idle_timeout;
                    match send(&mut upstream, request, write_by).await {
                        Sent::All => {
                            buf.drain(..whole);
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
                    buf.drain(..whole);
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
            tokio::time::timeout(set.proxy.connect_timeout, TcpStream::connect(backend.addr))
                .await;
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
        let bytes = wire::answer(refusal);
        let send_timeout = self.ex.admitted.set.proxy.send_timeout;
        if write_all(client, &bytes, deadline(send_timeout)).await {
            self.status = refusal.status;
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
    ) -> Relayed {
        let set = Arc::clone(&self.ex.admitted.set);
        let proxy = &set.proxy;
        let first_byte = policy::first_byte_wait(proxy);
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
                match read {
                    Ok(Err(ClientGone)) => return Relayed::Done(Outcome::Close),
                    Err(_) => return Relayed::Failed(Failure::FirstByte(first_byte)),
                    Ok(Ok(Ok(0))) | Ok(Ok(Err(_))) => return Relayed::Failed(Failure::NoAnswer),
                    Ok(Ok(Ok(_))) => {}
                }
            }
            let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
            let mut head = httparse::Response::new(&mut fields);
            let parsed = match head.parse(&resp) {
                Ok(httparse::Status::Complete(n)) => Some(n),
                Ok(httparse::Status::Partial) if resp.len() <= ANSWER_HEAD_LIMIT => None,
                _ => return Relayed::Failed(Failure::BadAnswer),
            };
            let Some(n) = parsed else {
                need_more = true;
                continue;
            };
            let status = head.code.unwrap_or(0);
            if (100..200).contains(&status) && status != 101 {
                if !write_all(client, &resp[..n], deadline(proxy.send_timeout)).await {
                    return Relayed::Done(Outcome::Close);
                }
                resp.drain(..n);
                need_more = resp.is_empty();
                continue;
            }
            let now = Instant::now();
            match self.answer_head(&head, backend, now - sent_at, closing, &mut down) {
                Ok(answer) => break (n, answer, now),
                Err(failure) => return Relayed::Failed(failure),
            }
        };
        let AnswerHead {
            status,
            mut framing,
            limit,
            keep_upstream,
            mut keep_client,
        } = answer;

        // The head goes out with whatever of the body came with it. From here on a failure
        // cannot be answered: the client's connection is closed, so it cannot take a cut
        // answer for a whole one.
        let mut passed = 0u64;
        let mut pending = &resp[head_len..];
        let mut complete = take_body(&mut framing, &mut pending, &mut down, &mut passed);
        let mut clean = complete.is_ok() && pending.is_empty();
        let write_by = tokio::time::Instant::from_std(head_at) + proxy.send_timeout;
        if !write_all(client, &down, write_by).await {
            return Relayed::Done(Outcome::Close);
        }
        self.status = status;
        let broken = loop {
            match complete {
                Ok(true) => break None,
                Ok(false) => {}
                Err(()) => break Some(Failure::BrokenAnswer),
            }
            if limit.is_some_and(|l| passed > l) {
                break Some(Failure::TooLarge);
            }
            resp.clear();
            let read = tokio::time::timeout(
                proxy.idle_timeout,
                read_watching(&mut upstream, &mut resp, client, pipelined),
            )
            .await;
            match read {
                Ok(Err(ClientGone)) => return Relayed::Done(Outcome::Close),
                Ok(Ok(Ok(0))) if matches!(framing, Framing::UntilClose) => {
                    keep_client = false;
                    break None;
                }
                Ok(Ok(Ok(0))) | Ok(Ok(Err(_))) => break Some(Failure::BrokenAnswer),
                Err(_) => break Some(Failure::Idle),
                Ok(Ok(Ok(_))) => {}
            }
            down.clear();
            let mut pending = &resp[..];
            complete = take_body(&mut framing, &mut pending, &mut down, &mut passed);
            clean = complete.is_ok() && pending.is_empty();
            if !write_all(client, &down, deadline(proxy.send_timeout)).await {
                return Relayed::Done(Outcome::Close);
            }
        };
        let broken = broken.or(limit
            .is_some_and(|l| passed > l)
            .then_some(Failure::TooLarge));
        if let Some(failure) = broken {
            self.fail(&set, backend, failure);
            return Relayed::Done(Outcome::Close);
        }
        if keep_upstream && clean {
            self.path
                .pool
                .put(backend.addr, upstream, proxy.upstream_keepalive, head_at);
        }
        Relayed::Done(if keep_client {
            Outcome::KeepAlive
        } else {
            Outcome::Close
        })
    }

    /// Checks the answer's head, records what it says about the server and writes the head the
    /// client gets into `down`.
    fn answer_head(
        &mut self,
        head: &httparse::Response,
        backend: &Backend,
        latency: Duration,
        closing: bool,
        down: &mut Vec<u8>,
    ) -> Result<AnswerHead, Failure> {
        let set = &self.ex.admitted.set;
        let status = head.code.unwrap_or(0);
        if status == 101 || status < 100 {
            return Err(Failure::BadAnswer);
        }
        let mut length = None;
        let mut chunked = false;
        let mut event_stream = false;
        let mut server_closes = head.version != Some(1);
        for f in head.headers.iter() {
            if is(f.name, "content-length") {
                match (length, policy::content_length(f.value)) {
                    (None, Some(n)) => length = Some(n),
                    _ => return Err(Failure::BadAnswer),
                }
            } else if is(f.name, "transfer-encoding") {
                if chunked || !f.value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                    return Err(Failure::BadAnswer);
                }
                chunked = true;
            } else if is(f.name, "content-type") {
                event_stream = answer::is_event_stream(f.value);
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
        let limit = answer::body_limit(set, event_stream);
        if let (Some(limit), Framing::Length(n)) = (limit, &framing) {
            if *n > limit {
                return Err(Failure::TooLarge);
            }
        }
        answer::head_received(set, backend, status, latency);

        let until_close = matches!(framing, Framing::UntilClose);
        let keep_client = !closing && !until_close;
        down.clear();
        wire::status_line(down, status, head.reason);
        for f in head.headers.iter() {
            // With chunked framing a Content-Length is wrong (RFC 9112 section 6.3): dropped.
            if answer::hop_by_hop(f.name) || (chunked && is(f.name, "content-length")) {
                continue;
            }
            if is(f.name, answer::SESSION_FIELD) {
                if let Some(token) = answer::seal(&self.path.codec, set, backend, f.value) {
                    wire::header(down, f.name.as_bytes(), token.as_bytes());
                }
                continue;
            }
            wire::header(down, f.name.as_bytes(), f.value);
        }
        if event_stream {
            let (name, value) = answer::ACCEL_BUFFERING;
            wire::header(down, name.as_bytes(), value.as_bytes());
        }
        if !keep_client {
            wire::header(down, b"connection", b"close");
        }
        down.extend_from_slice(b"\r\n");
        Ok(AnswerHead {
            status,
            framing,
            limit,
            keep_upstream: !server_closes && !until_close,
            keep_client,
        })
    }
}

/// Writes the request by `by`, telling how much of it got out when it fails.
async fn send(upstream: &mut TcpStream, bytes: &[u8], by: tokio::time::Instant) -> Sent {
    let mut written = 0usize;
    let write = async {
        while written < bytes.len() {
            match upstream.write(&bytes[written..]).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => written += n,
            }
        }
        true
    };
    let done = tokio::time::timeout_at(by, write).await;
    match done {
        Ok(true) => Sent::All,
        Ok(false) if written == 0 => Sent::Nothing,
        Ok(false) => Sent::Part,
        Err(_) => Sent::TimedOut,
    }
}

/// What the answer's head says.
struct AnswerHead {
    status: u16,
    framing: Framing,
    /// `answer::body_limit`.
    limit: Option<u64>,
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
