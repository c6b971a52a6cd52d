//! The fast path's byte moving: the request written to the server (and how much of it got
//! out when the write failed), the answer read, checked and passed on as it arrives.

use super::chunked::ChunkedBody;
use super::scratch::Scratch;
use super::{
    is, Client, Framing, Outcome, Relayed, Run, Sent, ANSWER_HEAD_LIMIT, MAX_FIELDS, READ_CHUNK,
};
use crate::proxy::policy::{self, answer, Failure};
use crate::proxy::timer::{after, Timer, Timers};
use crate::proxy::wire;
use crate::upstream::Backend;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

impl Run<'_> {
    /// Reads the server's answer and passes it on as it arrives.
    pub(super) async fn relay<C: Client>(
        &mut self,
        client: &mut C,
        pipelined: &mut Vec<u8>,
        mut upstream: TcpStream,
        backend: &Backend,
        sent_at: Instant,
        closing: bool,
    ) -> Relayed {
        let set = Arc::clone(&self.ex.admitted.set);
        let proxy = &set.proxy;
        let first_byte = policy::first_byte_wait(proxy);
        let head_deadline = move || tokio::time::Instant::from_std(sent_at) + first_byte;
        let mut resp = Scratch::take(READ_CHUNK);
        let mut down = Scratch::take(1024);

        // The head (after any 1xx heads, which are passed on as they come).
        // Bytes left over after a 1xx head may already hold the next head: parse before reading.
        let mut need_more = true;
        let (head_len, answer, head_at) = loop {
            if need_more {
                let read = self
                    .timers
                    .upstream
                    .within(
                        head_deadline,
                        read_watching(&mut upstream, &mut resp, client, pipelined),
                    )
                    .await;
                match read {
                    Some(Err(ClientGone)) => return Relayed::Done(Outcome::Close),
                    None => return Relayed::Failed(Failure::FirstByte(first_byte)),
                    Some(Ok(Ok(0))) | Some(Ok(Err(_))) => {
                        return Relayed::Failed(Failure::NoAnswer)
                    }
                    Some(Ok(Ok(_))) => {}
                }
            }
            match self.parse_head(&resp, backend, sent_at, closing, &mut down) {
                Parsed::Partial => need_more = true,
                Parsed::Informational(n) => {
                    let by = after(proxy.send_timeout);
                    if !write_all(&mut self.timers.client, client, &resp[..n], by).await {
                        return Relayed::Done(Outcome::Close);
                    }
                    resp.drain(..n);
                    need_more = resp.is_empty();
                }
                Parsed::Final(n, answer, now) => break (n, answer, now),
                Parsed::Failed(failure) => return Relayed::Failed(failure),
            }
        };
        let AnswerHead {
            status,
            mut framing,
            limit,
            keep_upstream,
            mut keep_client,
        } = answer;
        let event_stream = limit.is_none();

        // The head goes out with whatever of the body came with it. From here on a failure
        // cannot be answered: the client's connection is closed, so it cannot take a cut
        // answer for a whole one.
        let mut passed = 0u64;
        let after_head = &resp[head_len..];
        let mut taken = take_body(&mut framing, after_head, &mut passed);
        let mut clean = matches!(taken, Ok((n, _)) if n == after_head.len());
        if let Ok((n, _)) = taken {
            down.extend_from_slice(&after_head[..n]);
        }
        let write_by = || tokio::time::Instant::from_std(head_at) + proxy.send_timeout;
        if !write_all(&mut self.timers.client, client, &down, write_by).await {
            return Relayed::Done(Outcome::Close);
        }
        down.release();
        self.status = status;
        let broken = loop {
            match taken {
                Ok((_, true)) => break None,
                Ok((_, false)) => {}
                Err(()) => break Some(Failure::BrokenAnswer),
            }
            if limit.is_some_and(|l| passed > l) {
                break Some(Failure::TooLarge);
            }
            // Between reads the exchange holds no buffer of its own: an open event stream is
            // mostly waiting, and its memory is what it holds while it waits.
            resp.release();
            if event_stream && pipelined.is_empty() && pipelined.capacity() > WATCH_ROOM {
                *pipelined = Vec::new();
            }
            let read = self
                .timers
                .upstream
                .within(
                    after(proxy.idle_timeout),
                    read_watching(&mut upstream, &mut resp, client, pipelined),
                )
                .await;
            match read {
                Some(Err(ClientGone)) => return Relayed::Done(Outcome::Close),
                Some(Ok(Ok(0))) if matches!(framing, Framing::UntilClose) => {
                    keep_client = false;
                    break None;
                }
                Some(Ok(Ok(0))) | Some(Ok(Err(_))) => break Some(Failure::BrokenAnswer),
                None => break Some(Failure::Idle),
                Some(Ok(Ok(_))) => {}
            }
            // What belongs to the body goes on as it came, with no copy.
            taken = take_body(&mut framing, &resp, &mut passed);
            let n = taken.map_or(0, |(n, _)| n);
            clean = taken.is_ok() && n == resp.len();
            let by = after(proxy.send_timeout);
            if !write_all(&mut self.timers.client, client, &resp[..n], by).await {
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

    /// Parses the answer's head at the front of `resp`. Synchronous, so that the parsed fields
    /// (2 KiB) are no part of the exchange's future, which an open stream holds for its life.
    fn parse_head(
        &mut self,
        resp: &[u8],
        backend: &Backend,
        sent_at: Instant,
        closing: bool,
        down: &mut Vec<u8>,
    ) -> Parsed {
        let mut fields = [const { std::mem::MaybeUninit::uninit() }; MAX_FIELDS];
        let mut head = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut head,
            resp,
            &mut fields,
        );
        let n = match parsed {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if resp.len() <= ANSWER_HEAD_LIMIT => {
                return Parsed::Partial
            }
            _ => return Parsed::Failed(Failure::BadAnswer),
        };
        let status = head.code.unwrap_or(0);
        if (100..200).contains(&status) && status != 101 {
            return Parsed::Informational(n);
        }
        let now = Instant::now();
        match self.answer_head(&head, &resp[..n], backend, (sent_at, now), closing, down) {
            Ok(answer) => Parsed::Final(n, answer, now),
            Err(failure) => Parsed::Failed(failure),
        }
    }

    /// Checks the answer's head, records what it says about the server and writes the head the
    /// client gets into `down`.
    fn answer_head(
        &mut self,
        head: &httparse::Response,
        raw: &[u8],
        backend: &Backend,
        (sent_at, now): (Instant, Instant),
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
        answer::head_received(set, backend, status, now - sent_at, now);

        let until_close = matches!(framing, Framing::UntilClose);
        let keep_client = !closing && !until_close;
        down.clear();
        wire::answer_status_line(down, raw, status, head.reason);
        let mut copy = wire::FieldCopy::new(down, raw);
        for f in head.headers.iter() {
            // With chunked framing a Content-Length is wrong (RFC 9112 section 6.3): dropped.
            if answer::hop_by_hop(f.name) || (chunked && is(f.name, "content-length")) {
                continue;
            }
            if is(f.name, answer::SESSION_FIELD) {
                let caller = &self.ex.admitted.caller;
                let codec = self.path.codec.load();
                if let Some(token) = answer::seal(&codec, set, caller, backend, f.value) {
                    copy.write(f.name.as_bytes(), token.as_bytes());
                }
                continue;
            }
            copy.copy(f);
        }
        copy.finish();
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
pub(super) async fn send(
    timer: &mut Timer,
    upstream: &mut TcpStream,
    bytes: &[u8],
    by: impl FnOnce() -> tokio::time::Instant,
) -> Sent {
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
    let done = timer.within(by, write).await;
    match done {
        Some(true) => Sent::All,
        Some(false) if written == 0 => Sent::Nothing,
        Some(false) => Sent::Part,
        None => Sent::TimedOut,
    }
}

/// What the bytes at the front of an answer are.
enum Parsed {
    Partial,
    /// A 1xx head of this many bytes, passed on as it is.
    Informational(usize),
    /// The answer's head of this many bytes, and when it was read.
    Final(usize, AnswerHead, Instant),
    Failed(Failure),
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

/// How many bytes at the front of `pending` belong to the body (passed on as they are), and
/// whether they complete it; Err(()) when the server broke its framing. `passed` counts payload
/// bytes.
fn take_body(framing: &mut Framing, pending: &[u8], passed: &mut u64) -> Result<(usize, bool), ()> {
    match framing {
        Framing::Empty => Ok((0, true)),
        Framing::Length(left) => {
            let n = pending
                .len()
                .min(usize::try_from(*left).unwrap_or(usize::MAX));
            *left -= n as u64;
            *passed += n as u64;
            Ok((n, *left == 0))
        }
        Framing::Chunked(c) => {
            let n = c.feed(pending).map_err(|_| ())?;
            *passed = c.data_len();
            Ok((n, c.done()))
        }
        Framing::UntilClose => {
            *passed += pending.len() as u64;
            Ok((pending.len(), false))
        }
    }
}

/// Reads until `buf` holds at least `want` bytes.
pub(super) async fn read_at_least<C: Client>(
    client: &mut C,
    buf: &mut Vec<u8>,
    want: usize,
) -> std::io::Result<()> {
    while buf.len() < want {
        buf.reserve(want - buf.len());
        if client.read_buf(buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(())
}

/// How passing the rest of a large body on failed.
pub(super) enum Upload {
    /// The client closed (or broke) its connection first.
    ClientGone,
    /// The body did not arrive within `proxy.body_timeout`; so many of its bytes are unread.
    ClientSlow(usize),
    /// The server stopped taking it (the request reached it in part); so many of its bytes
    /// are unread.
    Failed(Failure, usize),
}

/// Largest piece of a body read from the client before it is written to the server.
const UPLOAD_CHUNK: usize = 64 * 1024;

/// Passes the `left` last bytes of a request body from the client to the server as they
/// arrive (a body over the fast path's buffered limit): the client by `body_by`, each write to
/// the server within `idle`. Never reads past the body, so a pipelined request stays unread.
pub(super) async fn upload<C: Client>(
    timers: &mut Timers,
    client: &mut C,
    upstream: &mut TcpStream,
    mut left: usize,
    body_by: tokio::time::Instant,
    idle: Duration,
) -> Result<(), Upload> {
    use bytes::BufMut;
    let mut chunk = Scratch::take(UPLOAD_CHUNK.min(left));
    while left > 0 {
        chunk.clear();
        let want = left.min(UPLOAD_CHUNK);
        let mut room = (&mut *chunk).limit(want);
        let read = timers.client.within(|| body_by, client.read_buf(&mut room));
        let n = match read.await {
            Some(Ok(0)) | Some(Err(_)) => return Err(Upload::ClientGone),
            Some(Ok(n)) => n,
            None => return Err(Upload::ClientSlow(left)),
        };
        left -= n;
        match send(&mut timers.upstream, upstream, &chunk[..n], after(idle)).await {
            Sent::All => {}
            Sent::TimedOut => return Err(Upload::Failed(Failure::Idle, left)),
            Sent::Nothing | Sent::Part => return Err(Upload::Failed(Failure::Send, left)),
        }
    }
    Ok(())
}

/// Reads and discards the `unread` bytes of a request answered before it was read in full, as
/// Pingora's path does (`policy::LINGER_TIME`): a client that writes its whole body before it
/// reads then sees the answer instead of a reset. Never reads past the request.
pub(super) async fn linger<C: Client>(timer: &mut Timer, client: &mut C, unread: usize) {
    use bytes::BufMut;
    let end = tokio::time::Instant::now() + policy::LINGER_TIME;
    let mut left = (unread as u64).min(policy::LINGER_BYTES);
    let mut sink = Vec::with_capacity(UPLOAD_CHUNK.min(unread));
    while left > 0 {
        sink.clear();
        let mut room = (&mut sink).limit(left.min(UPLOAD_CHUNK as u64) as usize);
        let by = || end.min(tokio::time::Instant::now() + policy::LINGER_IDLE);
        match timer.within(by, client.read_buf(&mut room)).await {
            Some(Ok(n)) if n > 0 => left -= n as u64,
            _ => break,
        }
    }
}

/// The client hung up while its answer was awaited.
struct ClientGone;

/// Client bytes kept while an answer is awaited (a pipelined request); past this the client is
/// not read (and not watched) until the answer is out.
const PIPELINE_LIMIT: usize = 64 * 1024;
/// Room for client bytes while an event stream is open: enough to see the client hang up (and
/// keep what a client pipelines, a little at a time), small because an open stream holds it.
const WATCH_ROOM: usize = 64;

/// Reads the server's next bytes while watching the client. A client that hangs up cancels its
/// request (the MCP rule; Pingora's path does the same), so the exchange ends at once and the
/// server sees its connection close, instead of working on until the answer finds nobody.
/// Bytes the client sends meanwhile are kept in `pipelined`, the connection's buffer.
/// The read buffer is taken only once the server's bytes are there.
async fn read_watching<C: Client>(
    upstream: &mut TcpStream,
    resp: &mut Scratch,
    client: &mut C,
    pipelined: &mut Vec<u8>,
) -> Result<std::io::Result<usize>, ClientGone> {
    loop {
        let watch = pipelined.len() < PIPELINE_LIMIT;
        // The connection's buffer usually has room left from reading the request; an event
        // stream's was given back (it would be held for the stream's life) and gets a little.
        if watch && pipelined.len() == pipelined.capacity() {
            pipelined.reserve(WATCH_ROOM);
        }
        // Readiness through the socket's own reader slot (`poll_read_ready`), as the read
        // itself uses, not `readable()`: that future queues a waiter in the socket's shared
        // list under its lock on every wait, ~450 instructions a request or event.
        let upstream_ready = std::future::poll_fn(|cx| upstream.poll_read_ready(cx));
        tokio::select! {
            biased;
            ready = upstream_ready => {
                if let Err(e) = ready {
                    return Ok(Err(e));
                }
                resp.ensure(READ_CHUNK);
                // One poll of tokio's own read, not `try_read_buf`: a read that returns less
                // than asked clears the socket's readiness there, so the next wait does not
                // begin with a read that fails with EAGAIN (one wasted `recvfrom` per event of
                // a stream otherwise).
                let read = std::pin::pin!(upstream.read_buf(&mut **resp));
                match futures::poll!(read) {
                    std::task::Poll::Ready(read) => return Ok(read),
                    // Readiness that was stale: wait again, holding no buffer.
                    std::task::Poll::Pending => {
                        if resp.is_empty() {
                            resp.release();
                        }
                    }
                }
            }
            got = client.read_buf(pipelined), if watch => match got {
                Ok(0) | Err(_) => return Err(ClientGone),
                Ok(_) => {}
            },
        }
    }
}

/// Writes and flushes by `by`; false when the client is gone or too slow.
pub(super) async fn write_all<C: Client>(
    timer: &mut Timer,
    client: &mut C,
    bytes: &[u8],
    by: impl FnOnce() -> tokio::time::Instant,
) -> bool {
    if bytes.is_empty() {
        return true;
    }
    let write = async {
        client.write_all(bytes).await?;
        client.flush().await
    };
    matches!(timer.within(by, write).await, Some(Ok(())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A socket whose peer reset it before the request: `Nothing` (so nothing reached the
    /// server, and a stale pooled connection may be retried); one whose peer read a little and
    /// then reset it: `Part` (something reached it: never resent).
    #[tokio::test]
    async fn a_failed_write_says_whether_any_of_the_request_got_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("test setup");
        let addr = listener.local_addr().expect("test setup");
        let by = || after(Duration::from_secs(10));
        let mut timer = Timer::default();

        let mut gone = TcpStream::connect(addr).await.expect("test setup");
        let (peer, _) = listener.accept().await.expect("test setup");
        #[allow(deprecated)]
        peer.set_linger(Some(Duration::ZERO)).expect("test setup");
        drop(peer);
        // The reset has arrived once a read sees it.
        let mut probe = [0u8; 1];
        let _ = gone.read(&mut probe).await;
        assert!(matches!(
            send(&mut timer, &mut gone, b"POST / HTTP/1.1\r\n\r\n", by()).await,
            Sent::Nothing
        ));

        let mut cut = TcpStream::connect(addr).await.expect("test setup");
        let (mut peer, _) = listener.accept().await.expect("test setup");
        let reader = tokio::spawn(async move {
            let mut first = vec![0u8; 1024];
            let _ = peer.read_exact(&mut first).await;
            #[allow(deprecated)]
            let _ = peer.set_linger(Some(Duration::ZERO));
        });
        // Far more than the socket buffers hold, so the write is still going when the reset comes.
        let big = vec![b'x'; 64 << 20];
        assert!(matches!(
            send(&mut timer, &mut cut, &big, by()).await,
            Sent::Part
        ));
        reader.await.expect("test setup");

        let mut fine = TcpStream::connect(addr).await.expect("test setup");
        let (_peer, _) = listener.accept().await.expect("test setup");
        assert!(matches!(
            send(&mut timer, &mut fine, b"GET / HTTP/1.1\r\n\r\n", by()).await,
            Sent::All
        ));
    }
}
