//! The listener's admission rules, which Pingora leaves to the application: at most
//! `proxy.max_connections` open client connections, and a deadline for every request head.
//!
//! Pingora times each read of a request head separately (60 s), so a client sending one byte
//! every few seconds holds a connection and a task forever (slowloris). The gate runs the HTTP/1
//! connection loop itself (the same loop as Pingora's `ServerApp` for HTTP apps, without h2c,
//! which we do not serve) and reads every request head itself, within a deadline:
//! `proxy.header_timeout` from accept for the first request, `proxy.client_idle_timeout` from
//! the end of the previous answer for the next ones. Only a whole head is handed to an engine
//! (the fast path, or Pingora's path with the bytes given back), so neither waits on a slow
//! head; Pingora then bounds the body's reads by `proxy.body_timeout`.
//!
//! With `[proxy.tls]` the gate runs the TLS handshake first (within `proxy.header_timeout`):
//! a connection that chose HTTP/2 by ALPN goes to Pingora's HTTP/2 server whole (each of its
//! streams through Pingora's path); an HTTP/1.1 one takes the loop below, fast path included.

use super::fast_path::{Client, FastPath, Outcome, Plan};
use super::policy::Refusal;
use super::timer::{after, Timers};
use super::tls::TlsIo;
use super::{wire, FleetProxy};
use crate::upstream::Registry;
use async_trait::async_trait;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::{Ssl, Stream, ALPN};
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub struct Gate {
    proxy: Arc<HttpProxy<FleetProxy>>,
    fast: FastPath,
    registry: Arc<Registry>,
    open: AtomicUsize,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Gate {
    pub fn new(
        proxy: HttpProxy<FleetProxy>,
        fast: FastPath,
        registry: Arc<Registry>,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Self {
        Self {
            proxy: Arc::new(proxy),
            fast,
            registry,
            open: AtomicUsize::new(0),
            tls,
        }
    }

    /// Reads until the fast path can decide on the head at the front of `buf` and, for a head
    /// it leaves to Pingora's path, until the whole head is there (or it is longer than any
    /// Pingora takes, which Pingora then refuses); None when the client closed (or broke) the
    /// connection first.
    async fn next_plan<C: Client>(
        &self,
        stream: &mut C,
        buf: &mut Vec<u8>,
        client_ip: Option<std::net::IpAddr>,
    ) -> Option<Plan> {
        // Once the fast path has said no, more bytes do not change its mind: from then on only
        // the end of the head is looked for, in the bytes not yet looked at.
        let mut deferred = false;
        let mut scanned = 0;
        loop {
            if !buf.is_empty() {
                if !deferred {
                    match self.fast.plan(buf, client_ip) {
                        Plan::Partial => {}
                        Plan::Defer => deferred = true,
                        taken => return Some(taken),
                    }
                }
                if deferred && !head_pending(buf, &mut scanned) {
                    return Some(Plan::Defer);
                }
            }
            buf.reserve(HEAD_READ);
            match stream.read_buf(buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// Reads the next request head within `deadline` and, when the fast path takes the
    /// request, carries it out.
    async fn fast_turn<C: Client>(
        &self,
        client: &mut C,
        timers: &mut Timers,
        buf: &mut Vec<u8>,
        deadline: std::time::Duration,
        client_ip: Option<std::net::IpAddr>,
        shutdown: &ShutdownWatch,
    ) -> Turn {
        let plan = timers
            .client
            .within(after(deadline), self.next_plan(client, buf, client_ip));
        match plan.await {
            // The head is whole and the fast path waits for the body it must read before
            // a server is chosen (chunked, or one the policy reads): Pingora's path reads
            // the rest within `proxy.body_timeout` (and answers when it does not come).
            None if head_ended(buf, 0) => Turn::Pingora,
            None => {
                crate::metrics::refused("header_timeout");
                tracing::debug!(?deadline, "request head not received in time; closing");
                Turn::Close
            }
            Some(None) => Turn::Close,
            Some(Some(Plan::Take(exchange))) => {
                let closing = *shutdown.borrow();
                match self
                    .fast
                    .exchange(client, timers, buf, exchange, closing)
                    .await
                {
                    Outcome::KeepAlive => Turn::KeepAlive,
                    Outcome::Close => Turn::Close,
                }
            }
            Some(Some(_)) => Turn::Pingora,
        }
    }

    /// One request on Pingora's path; the connection and its keep-alive settings back, unless
    /// Pingora closed it.
    async fn pingora_turn(
        &self,
        stream: Stream,
        persistent: Option<HttpPersistentSettings>,
        idle_secs: u64,
        shutdown: &ShutdownWatch,
    ) -> Option<(Stream, Option<HttpPersistentSettings>)> {
        let mut session = ServerSession::new_http1(stream);
        match persistent {
            Some(settings) => settings.apply_to_session(&mut session),
            None => session.set_keepalive(Some(idle_secs)),
        }
        if *shutdown.borrow() {
            session.set_keepalive(None);
        }
        let done = self.proxy.process_new_http(session, shutdown).await;
        Some(done?.consume())
    }
}

/// How a turn of the connection loop ended.
enum Turn {
    /// The fast path answered; the connection waits for the next request.
    KeepAlive,
    Close,
    /// Pingora's path takes the request at the front of the buffer.
    Pingora,
}

/// The socket of a plain TCP connection with nothing held in Pingora's buffers, for the fast
/// path to read and write directly (three layers, two clock reads per read and a copy per
/// write less); `None` for TLS.
fn raw_tcp(stream: &mut Stream) -> Option<&mut tokio::net::TcpStream> {
    let io: &mut dyn pingora::protocols::IO = &mut **stream;
    io.as_any_mut()
        .downcast_mut::<pingora::protocols::l4::stream::Stream>()?
        .tcp_mut()
}

/// A TLS connection, by the protocol its client chose (ALPN).
enum Accepted {
    H2(Stream),
    Http1(Stream),
}

/// The TLS handshake, within `within`; None (counted) when it fails or takes longer.
async fn handshake(
    acceptor: &tokio_rustls::TlsAcceptor,
    stream: Stream,
    within: std::time::Duration,
) -> Option<Accepted> {
    let io = match tokio::time::timeout(within, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => TlsIo::new(tls),
        Ok(Err(e)) => {
            crate::metrics::refused("tls_handshake");
            tracing::debug!(error = %e, "TLS handshake failed");
            return None;
        }
        Err(_) => {
            crate::metrics::refused("tls_handshake");
            return None;
        }
    };
    let h2 = matches!(io.selected_alpn_proto(), Some(ALPN::H2));
    let stream: Stream = Box::new(io);
    Some(if h2 {
        Accepted::H2(stream)
    } else {
        Accepted::Http1(stream)
    })
}

/// Pingora's own limit on a request head (`MAX_HEADER_SIZE` in its HTTP/1 server).
const PINGORA_HEAD_LIMIT: usize = 1024 * 1024;

/// More of the head at the front of `buf` is to come before Pingora's path may have it: it has
/// not ended (an empty line, with CRLF or bare LF endings; looked for from `scanned` on, which
/// it advances), is within Pingora's limit and does not start with a broken request line
/// (which Pingora refuses from what is there).
fn head_pending(buf: &[u8], scanned: &mut usize) -> bool {
    let ended = head_ended(buf, *scanned);
    *scanned = buf.len();
    if ended || buf.len() > PINGORA_HEAD_LIMIT {
        return false;
    }
    let mut no_fields = [];
    match httparse::Request::new(&mut no_fields).parse(buf) {
        Ok(_) | Err(httparse::Error::TooManyHeaders) => true,
        Err(_) => false,
    }
}

/// The head at the front of `buf` has ended (an empty line, with CRLF or bare LF endings), looked
/// for in the bytes from `scanned` on (and the two before, where the end may straddle two reads).
fn head_ended(buf: &[u8], scanned: usize) -> bool {
    let tail = &buf[scanned.saturating_sub(2)..];
    tail.windows(2).any(|w| w == b"\n\n") || tail.windows(3).any(|w| w == b"\n\r\n")
}

/// Bytes asked for per read of a request head.
const HEAD_READ: usize = 4096;

/// Puts bytes already read back in front of the connection, for Pingora to read again.
fn unread(stream: Stream, bytes: &[u8]) -> Option<Stream> {
    if bytes.is_empty() {
        return Some(stream);
    }
    let any = stream.into_any();
    let any = match any.downcast::<pingora::protocols::l4::stream::Stream>() {
        Ok(mut l4) => {
            l4.rewind(bytes);
            let stream: Stream = l4;
            return Some(stream);
        }
        Err(other) => other,
    };
    match any.downcast::<TlsIo>() {
        Ok(mut tls) => {
            tls.rewind(bytes);
            let stream: Stream = tls;
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
    ANSWER.get_or_init(|| wire::answer(&Refusal::too_many_connections()))
}

/// Answers 503 and closes. The request is read (a little, briefly: the proxy is overloaded, so
/// this lingers far less than `policy::LINGER_TIME`) after the answer so that closing with
/// unread bytes does not turn into a reset the client sees instead of the 503.
async fn refuse(mut stream: Stream) {
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
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
            // Boxed: its read buffer would otherwise be part of every connection's task.
            Box::pin(refuse(stream)).await;
            return None;
        }
        // Each step below that is not the fast path's is boxed, and so is a step's state while
        // the connection waits elsewhere: the task of an idle connection or an open event
        // stream then holds only the loop's own state (a few KiB less per connection).
        let stream = match &self.tls {
            None => stream,
            Some(acceptor) => {
                match Box::pin(handshake(acceptor, stream, limits.header_timeout)).await? {
                    Accepted::H2(stream) => {
                        return Box::pin(self.proxy.process_new(stream, shutdown)).await
                    }
                    Accepted::Http1(stream) => stream,
                }
            }
        };
        let idle_secs = limits.client_idle_timeout.as_secs().max(1);
        let mut deadline = limits.header_timeout;
        let client_ip = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        let mut stream = stream;
        let mut persistent: Option<HttpPersistentSettings> = None;
        let mut buf: Vec<u8> = Vec::new();
        let mut timers = Timers::default();
        loop {
            // A plain connection is read and written on its socket, past Pingora's layers.
            let turn = match raw_tcp(&mut stream) {
                Some(tcp) => {
                    self.fast_turn(tcp, &mut timers, &mut buf, deadline, client_ip, shutdown)
                        .await
                }
                None => {
                    self.fast_turn(
                        &mut stream,
                        &mut timers,
                        &mut buf,
                        deadline,
                        client_ip,
                        shutdown,
                    )
                    .await
                }
            };
            match turn {
                Turn::KeepAlive => {
                    if buf.capacity() > 4 * HEAD_READ && buf.is_empty() {
                        buf = Vec::new();
                    }
                    persistent = None;
                    deadline = limits.client_idle_timeout;
                    continue;
                }
                Turn::Close => return None,
                Turn::Pingora => {}
            }
            // Pingora's path: it reads the request again from the bytes given back.
            crate::metrics::metrics().pingora_path.inc();
            stream = unread(stream, &buf)?;
            buf = Vec::new();
            let (next, settings) =
                Box::pin(self.pingora_turn(stream, persistent.take(), idle_secs, shutdown)).await?;
            stream = next;
            persistent = settings;
            deadline = limits.client_idle_timeout;
        }
    }

    async fn cleanup(&self) {
        self.proxy.http_cleanup().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fast path reads a plain connection's socket only while Pingora's stream holds
    /// nothing: bytes given back for Pingora's path are read from the stream first, in order.
    #[tokio::test]
    async fn the_socket_is_used_directly_only_when_nothing_is_held_above_it() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("test setup");
        let addr = listener.local_addr().expect("test setup");
        let mut peer = tokio::net::TcpStream::connect(addr)
            .await
            .expect("test setup");
        let (accepted, _) = listener.accept().await.expect("test setup");
        let mut stream: Stream = Box::new(pingora::protocols::l4::stream::Stream::from(accepted));
        assert!(raw_tcp(&mut stream).is_some(), "a fresh plain connection");

        peer.write_all(b" world").await.expect("test setup");
        stream = unread(stream, b"hello").expect("a plain connection");
        assert!(raw_tcp(&mut stream).is_none(), "bytes given back are held");
        let mut got = vec![0u8; 11];
        stream
            .read_exact(&mut got[..5])
            .await
            .expect("rewound bytes");
        assert!(
            raw_tcp(&mut stream).is_some(),
            "the given-back bytes are read"
        );
        let tcp = raw_tcp(&mut stream).expect("checked above");
        tcp.read_exact(&mut got[5..]).await.expect("socket bytes");
        assert_eq!(got, b"hello world");
    }

    #[test]
    fn a_head_is_pending_until_its_empty_line_however_it_arrives() {
        let mut scanned = 0;
        let mut buf = b"POST /mcp/a HTTP/1.1\r\nhost: x\r".to_vec();
        assert!(head_pending(&buf, &mut scanned));
        buf.extend_from_slice(b"\n\r");
        assert!(head_pending(&buf, &mut scanned));
        buf.extend_from_slice(b"\nbody");
        assert!(
            !head_pending(&buf, &mut scanned),
            "the end straddled two reads"
        );
        let mut scanned = 0;
        assert!(!head_pending(b"GET / HTTP/1.1\nhost: x\n\n", &mut scanned));
        let mut scanned = 0;
        assert!(
            !head_pending(b"\x00\x01 not http\r\n", &mut scanned),
            "a broken request line"
        );
    }
}
